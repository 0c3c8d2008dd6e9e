"""An independent h5py reader for Allen Visual Coding 2P NWB 1.x files.

Reads the datasets the natural-scenes analysis needs, casting every dtype explicitly, and
raises `NWBError` naming the file and the problem for anything that does not fit the layout
described in allen-2p.md. Large arrays (dF/F) stay on disk: callers read them in cell blocks.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from .labels import (
    UnknownCreLineError,
    cre_line_from_genotype,
    ei_class,
    experiment_mouse,
    mouse_from_specimen_name,
)

PIPELINE = "processing/brain_observatory_pipeline"
DFF = f"{PIPELINE}/DfOverF/imaging_plane_1/data"
DFF_TIME = f"{PIPELINE}/DfOverF/imaging_plane_1/timestamps"
CELL_IDS = f"{PIPELINE}/ImageSegmentation/cell_specimen_ids"
RUNNING = f"{PIPELINE}/BehavioralTimeSeries/running_speed/data"
RUNNING_TIME = f"{PIPELINE}/BehavioralTimeSeries/running_speed/timestamps"
PRESENTATION = "stimulus/presentation"
TEMPLATE = "stimulus/templates/natural_scenes_image_stack/data"
SCENES_NAMES = ("natural_scenes", "natural_scenes_stimulus")
META = {
    "session_type": "general/session_type",
    "experiment_id": "general/session_id",
    "container_id": "general/experiment_container_id",
    "genotype": "general/subject/genotype",
    "area": "general/optophysiology/imaging_plane_1/location",
    "imaging_depth": "general/optophysiology/imaging_plane_1/imaging depth",
    "specimen_name": "general/specimen_name",
    "age": "general/subject/age",
    "sex": "general/subject/sex",
}


class NWBError(ValueError):
    """A file that is not a usable Visual Coding 2P natural-scenes NWB file."""


def _text(value) -> str:
    if isinstance(value, np.ndarray):
        value = value[()] if value.shape == () else value.ravel()[0]
    if isinstance(value, bytes | np.bytes_):
        return value.decode("utf-8", errors="replace")
    return str(value)


@dataclasses.dataclass
class Session:
    """Metadata and stimulus structure of one session; traces are read on demand."""

    path: Path
    experiment_id: int
    container_id: int
    area: str
    cre_line: str
    ei_class: str
    imaging_depth: int
    session_type: str
    genotype: str
    cell_specimen_ids: np.ndarray
    timestamps: np.ndarray
    stimulus: pd.DataFrame  # columns frame (image index, -1 blank), start, end; sorted by start
    n_templates: int
    metadata: dict
    source: str = ""  # where the file is read from (a path or a URL); empty: `path`
    sha256: str | None = None  # the file's digest when known without reading it (archives)
    mouse: str = ""  # the donor (specimen name's trailing number); empty: one per experiment

    @property
    def mouse_label(self) -> str:
        return self.mouse or experiment_mouse(self.experiment_id)

    @property
    def source_name(self) -> str:
        return self.source or str(self.path)

    @property
    def n_cells(self) -> int:
        return len(self.cell_specimen_ids)

    @property
    def n_frames(self) -> int:
        return len(self.timestamps)

    def dff_blocks(self, block: int) -> Iterator[tuple[slice, np.ndarray]]:
        """Yield (cell slice, float32 dF/F rows) in blocks of `block` cells."""
        with _open(self.path) as f:
            ds = f[DFF]
            for a in range(0, self.n_cells, block):
                sl = slice(a, min(a + block, self.n_cells))
                yield sl, np.asarray(ds[sl], dtype=np.float32)

    def template(self) -> np.ndarray:
        """The natural scenes image stack, (n_images, y, x) float32."""
        with _open(self.path) as f:
            return np.asarray(f[TEMPLATE][()], dtype=np.float32)

    def running_speed(self) -> tuple[np.ndarray, np.ndarray] | None:
        with _open(self.path) as f:
            if RUNNING not in f:
                return None
            data = np.asarray(f[RUNNING][()], dtype=np.float32)
            t = np.asarray(f[RUNNING_TIME][()], dtype=np.float64) if RUNNING_TIME in f else None
            return (t, data) if t is not None else None


def _open(path: Path) -> h5py.File:
    try:
        return h5py.File(path, "r")
    except FileNotFoundError:
        raise
    except OSError as e:
        raise NWBError(f"{path}: not a readable HDF5/NWB file (truncated or corrupt?): {e}") from e


def _require(f: h5py.File, key: str, path: Path) -> h5py.Dataset:
    try:
        obj = f[key]
    except KeyError:
        obj = None
    except OSError as e:  # truncated files can fail at object access
        raise NWBError(f"{path}: cannot read {key}: {e}") from e
    if not isinstance(obj, h5py.Dataset):
        raise NWBError(f"{path}: missing dataset {key!r}; not a Visual Coding 2P NWB file?")
    return obj


def _scenes_group(f: h5py.File, path: Path, session_type: str) -> h5py.Group:
    if PRESENTATION not in f:
        raise NWBError(f"{path}: no {PRESENTATION!r} group")
    names = [k for k in f[PRESENTATION] if k in SCENES_NAMES]
    if len(names) != 1:
        found = ", ".join(sorted(f[PRESENTATION])) or "nothing"
        raise NWBError(
            f"{path}: expected one natural scenes group under {PRESENTATION} "
            f"(session type {session_type!r}; natural scenes are in three_session_B), "
            f"found {found}"
        )
    return f[PRESENTATION][names[0]]


def check_experiment_id(named: str | Path, experiment_id: int, source: str | Path) -> None:
    """Refuse a session whose own experiment id differs from the id that names its file or
    store (``named``: ``<id>.nwb``, ``<id>.zarr``; other names are not checked): the same
    session under two ids would count its cells twice. ``source`` is named in the error."""
    stem = Path(named).name.split(".", 1)[0]
    if stem.isdigit() and int(stem) != int(experiment_id):
        raise NWBError(
            f"{source}: its experiment id is {experiment_id}, but it is stored as "
            f"{Path(named).name} (experiment {int(stem)})"
        )


def read_session(path: str | Path) -> Session:
    """Open an NWB file and read everything but the traces; validate the layout."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: NWB file does not exist")
    with _open(path) as f:
        meta = {}
        for name, key in META.items():
            if key in f:
                meta[name] = _text(f[key][()])
        for name in ("experiment_id", "area", "genotype"):
            if name not in meta:
                raise NWBError(f"{path}: missing metadata {META[name]!r}")
        session_type = meta.get("session_type", "unknown")
        try:
            cre = cre_line_from_genotype(meta["genotype"])
        except UnknownCreLineError as e:
            raise NWBError(f"{path}: {e} (genotype {meta['genotype']!r})") from e

        dff = _require(f, DFF, path)
        ids = np.asarray(_require(f, CELL_IDS, path)[()], dtype=np.int64)
        t = np.asarray(_require(f, DFF_TIME, path)[()], dtype=np.float64)
        if dff.ndim != 2 or dff.shape != (len(ids), len(t)):
            raise NWBError(
                f"{path}: dF/F shape {dff.shape} does not match {len(ids)} cell ids x "
                f"{len(t)} timestamps"
            )
        grp = _scenes_group(f, path, session_type)
        frames = np.asarray(_require(f, f"{grp.name}/data", path)[()])
        durations = np.asarray(_require(f, f"{grp.name}/frame_duration", path)[()])
        if durations.ndim != 2 or durations.shape != (len(frames), 2):
            raise NWBError(
                f"{path}: {grp.name}/frame_duration has shape {durations.shape}, "
                f"expected ({len(frames)}, 2)"
            )
        if not np.all(np.isfinite(durations)) or not np.allclose(durations, np.round(durations)):
            raise NWBError(f"{path}: {grp.name}/frame_duration holds non-integer frame indices")
        tmpl = _require(f, TEMPLATE, path)
        if tmpl.ndim != 3:
            raise NWBError(f"{path}: {TEMPLATE} has shape {tmpl.shape}, expected (n, y, x)")
        n_templates = int(tmpl.shape[0])

    frames = np.round(frames).astype(np.int64)
    start, end = np.round(durations).astype(np.int64).T
    stim = pd.DataFrame({"frame": frames, "start": start, "end": end})
    stim = stim.sort_values("start", kind="stable").reset_index(drop=True)
    bad = (stim.frame < -1) | (stim.frame >= n_templates)
    if bad.any():
        raise NWBError(
            f"{path}: stimulus table names image {int(stim.frame[bad].iloc[0])}, but the "
            f"template stack holds {n_templates} images (template/table mismatch)"
        )
    if (stim.start < 0).any() or (stim.end > len(t)).any():
        raise NWBError(f"{path}: stimulus frames outside the {len(t)} recorded frames")

    depth_text = meta.get("imaging_depth", "0 microns")
    try:
        depth = int(float(depth_text.split()[0]))
    except (ValueError, IndexError):
        raise NWBError(f"{path}: cannot parse imaging depth {depth_text!r}") from None
    try:
        experiment_id = int(meta["experiment_id"])
        container_id = int(meta.get("container_id", -1))
    except ValueError as e:
        raise NWBError(f"{path}: non-numeric experiment/container id: {e}") from e
    check_experiment_id(path, experiment_id, f"{path} ({META['experiment_id']})")
    return Session(
        path=path,
        experiment_id=experiment_id,
        container_id=container_id,
        area=meta["area"],
        cre_line=cre,
        ei_class=ei_class(cre),
        imaging_depth=depth,
        session_type=session_type,
        genotype=meta["genotype"],
        cell_specimen_ids=ids,
        timestamps=t,
        stimulus=stim,
        n_templates=n_templates,
        metadata=meta,
        mouse=mouse_from_specimen_name(meta.get("specimen_name")) or "",
    )
