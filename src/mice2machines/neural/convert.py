"""One NWB session to its experiment store: labelled responses, blanks and trials (zarr).

Responses follow the AllenSDK natural-scenes analysis by default: baseline = mean dF/F of
the 28 frames before onset, response = mean of the 14 frames from onset, difference in
percent dF/F; all windows are config options. Sessions are processed in blocks of cells so
memory stays near the size of one block (plus the responses, about 5% of the dF/F array),
whatever the session length.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import xarray as xr

from ..io import atomic_path, consolidate, prepare_store, provenance, sha256_file
from .nwb import NWBError, Session, check_experiment_id

log = logging.getLogger("mice2machines")


def settings(cfg: dict | None) -> dict:
    """The `neural` config section, validated, with defaults filled in
    (schemas/neural.schema.yaml)."""
    from ..settings import section

    return section("neural", cfg)


#: presentations per tile of window sums: a tile's stretch of the trace stays in cache
WINDOW_TILE = 256


def window_mean(dff: np.ndarray, starts: np.ndarray, offset: int, length: int) -> np.ndarray:
    """Mean of dff[:, s+offset : s+offset+length] for every start s, (cells, len(starts)).

    Windows that leave the recording give NaN. Sums run frame by frame in float64, tile by
    tile of presentations (twice as fast as whole-trace gathers, the same arithmetic).
    """
    n_frames = dff.shape[1]
    first = starts + offset
    ok = (first >= 0) & (first + length <= n_frames)
    acc = np.zeros((dff.shape[0], len(starts)), dtype=np.float64)
    idx = np.clip(first, 0, max(n_frames - length, 0))
    for a in range(0, len(starts), WINDOW_TILE):
        tile, out = idx[a : a + WINDOW_TILE], acc[:, a : a + WINDOW_TILE]
        lo = int(tile.min())
        trace, rel = dff[:, lo : int(tile.max()) + length], tile - lo
        for k in range(length):
            out += trace[:, rel + k]
    acc /= length
    acc[:, ~ok] = np.nan
    return acc


def presentation_responses(dff: np.ndarray, starts: np.ndarray, cfg: dict) -> np.ndarray:
    """Response minus baseline for every presentation, (cells, presentations), float32."""
    base = window_mean(dff, starts, -cfg["baseline_frames"], cfg["baseline_frames"])
    resp = window_mean(dff, starts, cfg["response_offset_frames"], cfg["response_frames"])
    out = resp - base
    if cfg["percent"]:
        out *= 100.0
    return out.astype(np.float32)


def trial_windows(
    dff: np.ndarray, starts: np.ndarray, window: Sequence[int], out: np.ndarray | None = None
) -> np.ndarray:
    """dF/F snippets around each onset, (cells, presentations, time); NaN outside the trace.

    ``out``: a float32 array of that shape to fill (reused across blocks, it saves the
    page faults of a fresh array each time)."""
    lo, hi = int(window[0]), int(window[1])
    width, n_frames = hi - lo, dff.shape[1]
    first = starts + lo
    ok = (first >= 0) & (first + width <= n_frames)
    windows = np.lib.stride_tricks.sliding_window_view(dff, width, axis=1)
    rows = np.clip(first, 0, n_frames - width)
    if out is None:
        out = np.empty((dff.shape[0], len(starts), width), dtype=np.float32)
    for c in range(dff.shape[0]):  # per cell: a row gather of contiguous windows (memcpy)
        out[c] = windows[c][rows]
    for j in np.flatnonzero(~ok):  # windows that leave the recording: NaN outside it
        idx = first[j] + np.arange(width)
        inside = (idx >= 0) & (idx < n_frames)
        out[:, j, :] = np.nan
        out[:, j, inside] = dff[:, idx[inside]]
    return out


def repeat_numbers(images: np.ndarray) -> np.ndarray:
    """0-based occurrence count of each presentation's image, in presentation order."""
    out = np.zeros(len(images), dtype=np.int64)
    seen: dict[int, int] = {}
    for i, img in enumerate(images.tolist()):
        out[i] = seen.get(img, 0)
        seen[img] = out[i] + 1
    return out


def bad_cells(dff: np.ndarray) -> np.ndarray:
    """True for traces with any NaN or that are all zero."""
    return ~np.isfinite(dff).all(axis=1) | ~np.any(dff != 0, axis=1)


def _cell_coords(session: Session) -> dict:
    n = session.n_cells
    return {
        "cell": ("cell", session.cell_specimen_ids),
        "experiment_id": ("cell", np.full(n, session.experiment_id, dtype=np.int64)),
        "container_id": ("cell", np.full(n, session.container_id, dtype=np.int64)),
        "mouse": ("cell", np.full(n, session.mouse_label, dtype=object)),
        "area": ("cell", np.full(n, session.area, dtype=object)),
        "cre_line": ("cell", np.full(n, session.cre_line, dtype=object)),
        "ei_class": ("cell", np.full(n, session.ei_class, dtype=object)),
        "imaging_depth": ("cell", np.full(n, session.imaging_depth, dtype=np.int64)),
    }


def session_skeleton(session: Session, cfg: dict) -> tuple[xr.Dataset, dict]:
    """A lazily-filled Dataset of one session (dask zeros) plus the index arrays to fill it."""
    import dask.array as da

    stim = session.stimulus
    starts = stim.start.to_numpy()
    images = stim.frame.to_numpy()
    shown = images >= 0
    reps = repeat_numbers(images)
    n_rep = int(reps[shown].max() + 1) if shown.any() else 0
    n_img = session.n_templates
    blank_idx = np.flatnonzero(~shown)
    lo, hi = cfg["trial_window_frames"]
    block = int(cfg["cell_block"])
    n = session.n_cells
    t = session.timestamps
    onset = t[starts]
    frame_dt = float(np.median(np.diff(t))) if len(t) > 1 else 1 / 30

    def lazy(shape, chunks):
        return da.full(shape, np.nan, dtype=np.float32, chunks=chunks)

    attrs_units = "percent dF/F" if cfg["percent"] else "dF/F"
    ds = xr.Dataset(
        {
            "responses": (
                ("cell", "image", "repeat"),
                lazy((n, n_img, n_rep), (block, n_img, n_rep)),
                {"units": attrs_units, "long_name": "response minus baseline"},
            ),
            "blank_responses": (
                ("cell", "blank"),
                lazy((n, len(blank_idx)), (block, max(len(blank_idx), 1))),
                {"units": attrs_units},
            ),
            "trials": (
                ("cell", "presentation", "time"),
                lazy((n, len(starts), hi - lo), (block, min(len(starts), 1024), hi - lo)),
                {"units": "dF/F", "long_name": "dF/F around each onset"},
            ),
        },
        coords={
            **_cell_coords(session),
            "image": ("image", np.arange(n_img, dtype=np.int64)),
            "repeat": ("repeat", np.arange(n_rep, dtype=np.int64)),
            "blank": ("blank", np.arange(len(blank_idx), dtype=np.int64)),
            "blank_onset_time": ("blank", onset[blank_idx], {"units": "s"}),
            "presentation": ("presentation", np.arange(len(starts), dtype=np.int64)),
            "presentation_image": ("presentation", images),
            "presentation_repeat": ("presentation", np.where(shown, reps, -1)),
            "onset_time": ("presentation", onset, {"units": "s"}),
            "onset_frame": ("presentation", starts),
            "time": ("time", np.arange(lo, hi) * frame_dt, {"units": "s"}),
        },
    )
    if cfg["store_trials"]:
        # noisy float snippets barely compress; storing them raw keeps the write at disk speed
        ds["trials"].encoding["compressors"] = None
    else:
        ds = ds.drop_vars(["trials", "time"])
    index = {
        "starts": starts,
        "images": images,
        "reps": reps,
        "shown": shown,
        "blank_idx": blank_idx,
    }
    return ds, index


def _attrs(session: Session, cfg: dict, hash_input: bool) -> dict:
    """The experiment store's attributes: the session's labels, the windows, provenance."""
    digest = (session.sha256 or sha256_file(session.path)) if hash_input else None
    return {
        "experiment_id": session.experiment_id,
        "container_id": session.container_id,
        "area": session.area,
        "cre_line": session.cre_line,
        "mouse": session.mouse_label,
        "session_type": session.session_type,
        "baseline_window_frames": [-cfg["baseline_frames"], 0],
        "response_window_frames": [
            cfg["response_offset_frames"],
            cfg["response_offset_frames"] + cfg["response_frames"],
        ],
        "trial_window_frames": list(cfg["trial_window_frames"]),
        "source_file": session.source_name,
        "provenance": provenance(config=cfg, inputs={session.source_name: digest}),
    }


def _write_skeleton(ds: xr.Dataset, staging: Path) -> None:
    """Write the store's metadata and coordinates (data variables stay unwritten, all fill).

    xarray lays the store out in a zarr memory store, whose objects are then written as
    files: a local store pays a thread round trip for each of its ~60 small operations.
    """
    import zarr

    objects: dict = {}
    ds.to_zarr(
        zarr.storage.MemoryStore(objects),
        mode="w",
        compute=False,
        zarr_format=3,
        consolidated=False,
    )
    for key, buf in objects.items():
        path = staging / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(buf.to_bytes())


def _write_blocks(session: Session, ds: xr.Dataset, ix: dict, cfg: dict, staging: Path):
    """Fill the staged store block of cells by block; return which cells are bad traces.

    Writes go to the zarr arrays directly (an xarray region write per block costs tens of
    ms of store round trips): trials one store chunk at a time, responses and blanks (about
    5% of the dF/F array) gathered in memory and written once.
    """
    import zarr

    shown, reps, images = ix["shown"], ix["reps"], ix["images"]
    n = session.n_cells
    bad = np.zeros(n, dtype=bool)
    group = zarr.open_group(staging, mode="r+", zarr_format=3)
    resp = np.full(ds["responses"].shape, np.nan, np.float32)
    blanks = np.empty(ds["blank_responses"].shape, np.float32)
    # skip zarr's all-NaN test of each chunk (about half the write's CPU): a trials chunk
    # is all NaN only when all its cells are bad traces, and then the store is rewritten
    trials = group["trials"].with_config({"write_empty_chunks": True}) if "trials" in ds else None
    buf = np.empty(trials.chunks, np.float32) if trials is not None else None
    for sl, dff in session.dff_blocks(int(cfg["cell_block"])):
        bad[sl] = bad_cells(dff)
        if bad[sl].any() and cfg["bad_traces"] == "error":
            first = session.cell_specimen_ids[sl][bad[sl]][0]
            raise NWBError(
                f"{session.path}: cell {first} has a NaN or all-zero dF/F trace "
                "(set neural.bad_traces: drop to skip such cells)"
            )
        per = presentation_responses(dff, ix["starts"], cfg)
        resp[sl, images[shown], reps[shown]] = per[:, shown]
        blanks[sl] = per[:, ix["blank_idx"]]
        if trials is not None:
            _write_trials(trials, sl, dff, ix["starts"], cfg["trial_window_frames"], buf)
        log.info(
            "experiment %s: cells %d-%d of %d done", session.experiment_id, sl.start, sl.stop, n
        )
    group["responses"][...] = resp
    if blanks.size:
        group["blank_responses"][...] = blanks
    log.info("experiment %s: responses of %d cells written", session.experiment_id, n)
    return bad


def _write_trials(trials, sl: slice, dff: np.ndarray, starts: np.ndarray, window, buf) -> None:
    """One block's trials, one store chunk of presentations at a time, each gathered into
    ``buf`` (a reused array of one chunk's shape; a full chunk is written without a copy)."""
    step = buf.shape[1]
    for p in range(0, len(starts), step):
        part = buf[: sl.stop - sl.start, : min(step, len(starts) - p)]
        trials[sl, p : p + part.shape[1]] = trial_windows(dff, starts[p : p + step], window, part)


def convert_session(
    session: Session, out: str | Path, cfg: dict | None = None, hash_input: bool = True
) -> dict:
    """Write one session's zarr store (responses, blanks, trials), streaming cell blocks.

    Returns a summary dict (cells kept / dropped). Bad traces (NaN or all zero) are dropped
    with a warning, or raise NWBError when cfg['bad_traces'] == 'error'.
    """
    check_experiment_id(out, session.experiment_id, session.path)
    cfg = settings(cfg)
    ds, ix = session_skeleton(session, cfg)
    ds.attrs.update(_attrs(session, cfg, hash_input))
    ds = prepare_store(ds, out, f"experiment {session.experiment_id}: trial responses")
    with atomic_path(out) as final:
        staging = final.with_name(final.name + ".full")
        try:
            _write_skeleton(ds, staging)
            bad = _write_blocks(session, ds, ix, cfg, staging)
            n_bad = int(bad.sum())
            if n_bad == session.n_cells:
                raise NWBError(f"{session.path}: every dF/F trace is NaN or all zero")
            if n_bad:
                log.warning(
                    "%s: dropped %d of %d cells with NaN or all-zero dF/F",
                    session.path,
                    n_bad,
                    session.n_cells,
                )
                kept = xr.open_zarr(staging, consolidated=False).isel(cell=np.flatnonzero(~bad))
                kept.attrs["dropped_cells"] = json.dumps(session.cell_specimen_ids[bad].tolist())
                for v in kept.variables.values():
                    v.encoding.clear()
                kept.chunk({"cell": int(cfg["cell_block"])}).to_zarr(
                    final, mode="w", zarr_format=3, consolidated=False
                )
            else:
                staging.rename(final)
            consolidate(final)
        finally:
            if staging.exists():
                shutil.rmtree(staging)
    return {"cells": session.n_cells - n_bad, "dropped": n_bad}
