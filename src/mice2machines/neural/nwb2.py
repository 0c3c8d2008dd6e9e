"""A pynwb reader for the Visual Coding 2P sessions on DANDI (dandiset 000728, NWB 2).

The layout is the one catalystneuro/visual-coding-to-nwb-v2 writes: dF/F is
`processing/ophys/DfOverF/DfOverF` (time x ROI), cell specimen ids are the `global_roi_id`
column of `ImageSegmentation/PlaneSegmentation`, the scenes are the `natural_scenes_stimulus`
IndexSeries (onset timestamps only, indices cast to uint32 so a blank arrives as 4294967295)
over the `natural_scenes_template` Images (`NaturalScene{i}`), and `session_id` is
`<experiment id>-StimB`. The imaging plane's description holds a literal `{depth}`, so the
depth comes from the caller (the experiments table) when the file has none.

`read_session` returns an `nwb.Session` (the NWB 1 reader's type), so `convert` writes the same
experiment store from either layout. A path may be an http(s) URL: the file is then streamed
with remfile (HTTP range requests), and only metadata, dF/F and the stimulus tables travel.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from .labels import UnknownCreLineError, cre_line_from_genotype, ei_class
from .nwb import NWBError, Session

OPHYS = "ophys"
DFF = ("DfOverF", "DfOverF")
SEGMENTATION = ("ImageSegmentation", "PlaneSegmentation")
ROI_ID = "global_roi_id"
SCENES = "natural_scenes_stimulus"
TEMPLATE = "natural_scenes_template"
IMAGE_NAME = re.compile(r"NaturalScene(\d+)$")
SESSION_ID = re.compile(r"^(\d+)-Stim([A-Z0-9]+)$")
BLANK_UINT32 = np.iinfo(np.uint32).max
#: the natural-scenes session type in NWB 1 terms (`three_session_B`); its suffix is the `Stim` tag
SESSION_TYPES = {"B": "three_session_B", "A": "three_session_A", "C": "three_session_C"}
#: tolerance when an onset is matched to the dF/F frame being acquired at that moment
ONSET_TOLERANCE_S = 1e-6


def is_url(path) -> bool:
    return isinstance(path, str) and path.startswith(("http://", "https://"))


def is_nwb2(path: str | Path) -> bool:
    """True when a local HDF5 file declares NWB 2 (root attribute `nwb_version` 2.x)."""
    try:
        with h5py.File(path, "r") as f:
            version = f.attrs.get("nwb_version")
    except OSError:
        return False
    if isinstance(version, bytes):
        version = version.decode()
    return isinstance(version, str) and version.startswith("2")


@contextlib.contextmanager
def open_nwb(path: str | Path, min_chunk_bytes: int = 1 << 17) -> Iterator:
    """The pynwb NWBFile of a local path or an http(s) URL (streamed with remfile)."""
    from pynwb import NWBHDF5IO

    with contextlib.ExitStack() as stack:
        try:
            if is_url(path):
                import remfile

                rf = remfile.File(path, _min_chunk_size=min_chunk_bytes)
                h5 = stack.enter_context(h5py.File(rf, "r"))
            else:
                if not Path(path).exists():
                    raise FileNotFoundError(f"{path}: NWB file does not exist")
                h5 = stack.enter_context(h5py.File(path, "r"))
            io = stack.enter_context(NWBHDF5IO(file=h5, mode="r", load_namespaces=True))
            nwbfile = io.read()
        except (FileNotFoundError, NWBError):
            raise
        except Exception as e:  # h5py OSError, hdmf construct errors, HTTP errors
            raise NWBError(f"{path}: not a readable NWB 2 file: {type(e).__name__}: {e}") from e
        yield nwbfile


def _get(container, key: str, path, where: str):
    try:
        return container[key]
    except KeyError:
        names = ", ".join(sorted(c.name for c in container.children)) or "nothing"
        raise NWBError(f"{path}: no {key!r} in {where} (found {names})") from None


def _dff_series(nwbfile, path):
    if OPHYS not in nwbfile.processing:
        raise NWBError(f"{path}: no processing/{OPHYS} module; not a processed session?")
    module = nwbfile.processing[OPHYS]
    dff = _get(_get(module, DFF[0], path, f"processing/{OPHYS}"), DFF[1], path, "DfOverF")
    seg = _get(module, SEGMENTATION[0], path, f"processing/{OPHYS}")
    plane = _get(seg, SEGMENTATION[1], path, "ImageSegmentation")
    return dff, plane


def _scenes(nwbfile, path, session_type: str):
    if SCENES not in nwbfile.stimulus:
        found = ", ".join(sorted(nwbfile.stimulus)) or "nothing"
        raise NWBError(
            f"{path}: no {SCENES!r} IndexSeries in stimulus (session type {session_type!r}; "
            f"natural scenes are in the StimB sessions), found {found}"
        )
    return nwbfile.stimulus[SCENES]


def image_order(images, path) -> list[str]:
    """Names of the template images in index order: `NaturalScene{i}` by i (the converter
    writes no `order_of_images`), else the Images' own order_of_images."""
    names = list(images.images)
    numbered = [IMAGE_NAME.match(n) for n in names]
    if names and all(numbered):
        idx = sorted(int(m.group(1)) for m in numbered)
        if idx != list(range(len(names))):
            raise NWBError(f"{path}: {TEMPLATE} holds NaturalScene images {idx}, not 0..n-1")
        return [f"NaturalScene{i}" for i in idx]
    order = getattr(images, "order_of_images", None)
    if order is not None:
        return [img.name for img in order.data[:]]
    raise NWBError(f"{path}: {TEMPLATE} images are neither NaturalScene<i> nor ordered")


def frame_indices(timestamps: np.ndarray, onsets: np.ndarray, path) -> np.ndarray:
    """The dF/F frame being acquired at each onset (the last frame starting at or before it)."""
    idx = np.searchsorted(timestamps, onsets + ONSET_TOLERANCE_S, side="right") - 1
    if (idx < 0).any() or (onsets > timestamps[-1] + np.median(np.diff(timestamps))).any():
        raise NWBError(f"{path}: stimulus onsets outside the {len(timestamps)} recorded frames")
    return idx.astype(np.int64)


def presentation_table(indices, onsets, timestamps, n_templates, path) -> pd.DataFrame:
    """The NWB 1 reader's table (frame: image or -1 blank, start, end) from an IndexSeries.

    `end` is not in the NWB 2 file: it is the frame of the onset plus the median onset gap."""
    raw = np.asarray(indices)
    frames = np.where(raw.astype(np.uint32) == BLANK_UINT32, -1, raw.astype(np.int64))
    bad = (frames < -1) | (frames >= n_templates)
    if bad.any():
        raise NWBError(
            f"{path}: {SCENES} names image {int(frames[bad][0])}, but {TEMPLATE} holds "
            f"{n_templates} images (template/table mismatch)"
        )
    counts = np.bincount(frames[frames >= 0], minlength=n_templates)
    if n_templates > 1 and counts[0] > 1.5 * max(counts[1:].max(), 1) and not (frames < 0).any():
        raise NWBError(
            f"{path}: image 0 is shown {counts[0]} times, the others at most "
            f"{counts[1:].max()}, and no blank is marked: the blanks (-1) were probably clipped "
            "to 0 by the uint32 cast, and cannot be told from image 0"
        )
    onsets = np.asarray(onsets, dtype=np.float64)
    if len(onsets) != len(frames):
        raise NWBError(f"{path}: {SCENES} has {len(frames)} indices but {len(onsets)} timestamps")
    start = frame_indices(timestamps, onsets, path)
    gap = int(np.median(np.diff(np.sort(start)))) if len(start) > 1 else 1
    end = np.minimum(start + max(gap, 1), len(timestamps))
    stim = pd.DataFrame({"frame": frames, "start": start, "end": end})
    return stim.sort_values("start", kind="stable").reset_index(drop=True)


def depth_from_description(text: str) -> int | None:
    """The depth in a formatted imaging-plane description ('... at a depth of 175 µm'), else
    None (the converter left `{depth}` unformatted)."""
    m = re.search(r"depth of\s+(\d+(?:\.\d+)?)", text or "")
    return int(float(m.group(1))) if m else None


def _notes(text: str) -> dict:
    """`Container ID: ...`, `Session type: ...` lines of the converter's NWBFile notes."""
    out = {}
    for line in (text or "").splitlines():
        key, sep, value = line.partition(":")
        if sep:
            out[key.strip().lower()] = value.strip()
    return out


#: the converter's notes line naming the donor, as NWB 1's specimen name ends
MOUSE_NOTE = "mouse id (from genotype white paper)"


def _identity(nwbfile, path) -> dict:
    """experiment and container ids, session type and id, and the mouse: the notes' donor
    (as NWB 1's specimen name ends), else the subject id."""
    sid = str(nwbfile.session_id or "")
    m = SESSION_ID.match(sid)
    if not m:
        raise NWBError(f"{path}: session_id {sid!r} is not '<experiment id>-Stim<A|B|C>'")
    notes = _notes(nwbfile.notes)
    try:
        container = int(notes.get("container id", -1))
    except ValueError:
        raise NWBError(f"{path}: non-numeric container id in notes: {notes}") from None
    subject = getattr(nwbfile.subject, "subject_id", None) if nwbfile.subject else None
    return {
        "experiment_id": int(m.group(1)),
        "container_id": container,
        "mouse": notes.get(MOUSE_NOTE) or str(subject or ""),
        "session_type": notes.get("session type") or SESSION_TYPES.get(m.group(2), sid),
        "session_id": sid,
    }


def _labels(nwbfile, plane_seg, path, imaging_depth, default_depth) -> dict:
    subject = nwbfile.subject
    genotype = getattr(subject, "genotype", None)
    if not genotype:
        raise NWBError(f"{path}: no subject genotype (general/subject/genotype)")
    try:
        cre = cre_line_from_genotype(genotype)
    except UnknownCreLineError as e:
        raise NWBError(f"{path}: {e} (genotype {genotype!r})") from e
    plane = plane_seg.imaging_plane
    area = str(plane.location or "")
    if not area:
        raise NWBError(f"{path}: imaging plane {plane.name!r} has no location (the area)")
    depth = imaging_depth
    if depth is None:
        depth = depth_from_description(plane.description)
    if depth is None:
        depth = default_depth
    if depth is None:
        raise NWBError(
            f"{path}: no imaging depth (the imaging plane's description is "
            f"{plane.description!r}); give it from the experiments table "
            "(dandi.experiments_table) or set dandi.unknown_depth"
        )
    return {"genotype": genotype, "cre_line": cre, "area": area, "imaging_depth": int(depth)}


@dataclasses.dataclass
class DandiSession(Session):
    """An `nwb.Session` read from an NWB 2 file or URL; traces are read on demand."""

    def _open(self):
        """The file, opened again for a local path; for a URL, one streamed handle kept for
        the session's life, so the HDF5 metadata travels once (`close` ends it)."""
        if not is_url(self.source):
            return open_nwb(self.source)
        if self.__dict__.get("_stream") is None:
            stack = contextlib.ExitStack()
            self.__dict__["_stream"] = (stack, stack.enter_context(open_nwb(self.source)))
        return contextlib.nullcontext(self.__dict__["_stream"][1])

    def close(self) -> None:
        stream = self.__dict__.pop("_stream", None)
        if stream is not None:
            stream[0].close()

    def dff_blocks(self, block: int) -> Iterator[tuple[slice, np.ndarray]]:
        """(cell slice, float32 dF/F rows) in blocks of `block` cells; the file is (time, roi)."""
        with self._open() as nwbfile:
            data = nwbfile.processing[OPHYS][DFF[0]][DFF[1]].data
            for a in range(0, self.n_cells, block):
                sl = slice(a, min(a + block, self.n_cells))
                yield sl, np.ascontiguousarray(np.asarray(data[:, sl], dtype=np.float32).T)

    def template(self) -> np.ndarray:
        """The natural scenes, (n_images, y, x) float32 on the 0-255 scale."""
        with self._open() as nwbfile:
            images = nwbfile.stimulus_template[TEMPLATE]
            names = image_order(images, self.source)
            return np.stack([np.asarray(images[n].data[()], dtype=np.float32) for n in names])

    def running_speed(self) -> tuple[np.ndarray, np.ndarray] | None:
        with self._open() as nwbfile:
            try:
                ts = nwbfile.processing["behavior"]["BehavioralTimeSeries"]["running_speed"]
            except KeyError:
                return None
            t = np.asarray(ts.timestamps[:], dtype=np.float64)
            return t, np.asarray(ts.data[:], dtype=np.float32)


def read_session(
    path: str | Path,
    imaging_depth: int | None = None,
    sha256: str | None = None,
    default_depth: int | None = None,
) -> DandiSession:
    """Open a DANDI-layout NWB 2 session (file or URL) and read everything but the traces.

    The depth is `imaging_depth` (microns, from the experiments table), else the one in a
    formatted imaging-plane description, else `default_depth`, else an NWBError. `sha256` is
    the archive's digest of a streamed file, recorded in the store's provenance.
    """
    source = path if is_url(path) else str(Path(path))
    stack = contextlib.ExitStack()
    try:
        nwbfile = stack.enter_context(open_nwb(source))
        session = _session(nwbfile, source, imaging_depth, default_depth)
    except BaseException:
        stack.close()
        raise
    session.sha256 = sha256 or ("streamed, not hashed" if is_url(source) else None)
    if is_url(source):
        session.__dict__["_stream"] = (stack, nwbfile)  # the metadata travels once
    else:
        stack.close()
    return session


def _session(nwbfile, source: str, imaging_depth, default_depth) -> DandiSession:
    ident = _identity(nwbfile, source)
    series, plane_seg = _dff_series(nwbfile, source)
    labels = _labels(nwbfile, plane_seg, source, imaging_depth, default_depth)
    if ROI_ID not in plane_seg.colnames:
        raise NWBError(f"{source}: PlaneSegmentation has no {ROI_ID!r} column")
    ids = np.asarray(plane_seg[ROI_ID].data[:], dtype=np.int64)
    ids = ids[np.asarray(series.rois.data[:], dtype=np.int64)]
    if series.timestamps is None:
        raise NWBError(f"{source}: DfOverF has no timestamps")
    t = np.asarray(series.timestamps[:], dtype=np.float64)
    shape = tuple(series.data.shape)
    if len(shape) != 2 or shape != (len(t), len(ids)):
        raise NWBError(
            f"{source}: DfOverF shape {shape} does not match {len(t)} timestamps x "
            f"{len(ids)} ROIs (time, roi)"
        )
    scenes = _scenes(nwbfile, source, ident["session_type"])
    if scenes.indexed_images is None:
        raise NWBError(f"{source}: {SCENES} has no indexed_images (the template)")
    n_templates = len(image_order(scenes.indexed_images, source))
    stim = presentation_table(scenes.data[:], scenes.timestamps[:], t, n_templates, source)
    name = source.split("?")[0].rsplit("/", 1)[-1] if is_url(source) else source
    return DandiSession(
        path=Path(name),
        experiment_id=ident["experiment_id"],
        container_id=ident["container_id"],
        area=labels["area"],
        cre_line=labels["cre_line"],
        ei_class=ei_class(labels["cre_line"]),
        imaging_depth=labels["imaging_depth"],
        session_type=ident["session_type"],
        genotype=labels["genotype"],
        cell_specimen_ids=ids,
        timestamps=t,
        stimulus=stim,
        n_templates=n_templates,
        metadata={**ident, **labels, "source": source},
        source=source,
        mouse=ident["mouse"],
    )


def summarize(path: str | Path, imaging_depth: int | None = None) -> dict:
    """What an NWB 2 session holds: cells, images, repeats, areas, Cre lines, experiment ids.

    The depth is not needed: an unknown one is reported as None."""
    s = read_session(path, imaging_depth=imaging_depth, default_depth=-1)
    depth = None if s.imaging_depth == -1 else s.imaging_depth
    shown = s.stimulus.frame[s.stimulus.frame >= 0]
    counts = shown.value_counts()
    return {
        "format": "NWB 2 (DANDI Visual Coding layout)",
        "path": str(path),
        "n_cells": s.n_cells,
        "n_images": s.n_templates,
        "n_repeats": int(counts.max()) if len(counts) else 0,
        "n_repeats_min": int(counts.reindex(range(s.n_templates), fill_value=0).min()),
        "n_blanks": int((s.stimulus.frame < 0).sum()),
        "n_frames": s.n_frames,
        "areas": [s.area],
        "cre_lines": [s.cre_line],
        "experiment_ids": [s.experiment_id],
        "imaging_depth": depth,
        "session_type": s.session_type,
    }


def read_any(path: str | Path, **nwb2_args):
    """An `nwb.Session` from an Allen NWB 1 file or a DANDI NWB 2 file or URL (`nwb2_args`:
    those of `read_session`)."""
    if is_url(path) or (Path(path).exists() and is_nwb2(path)):
        return read_session(path, **nwb2_args)
    from .nwb import read_session as read_nwb1

    return read_nwb1(path)
