"""Checks before the costly work of a job (extraction, the neural and compare stages): the disk a
store will take, and the memory a compare_model job will peak at against what its rule declares.

Each estimate comes from metadata only (zarr stores' shapes, a lazy skeleton's nbytes), and a
failed check raises :class:`PreflightError` naming the file, the setting and the problem.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
from collections.abc import Mapping
from pathlib import Path

from .resources import MB, input_mb, store_arrays
from .settings import defaults

log = logging.getLogger("mice2machines")

#: interpreter, numpy / torch / xarray imports and their allocator's slack
BASELINE_MB = 800


class PreflightError(RuntimeError):
    """A job would exceed its memory or the free disk; raised before the costly work."""


def free_disk(dest: str | os.PathLike, need_bytes: float, what: str) -> dict:
    """Raise PreflightError when ``dest``'s filesystem has less free space than
    ``need_bytes``; returns the numbers."""
    parent = Path(dest).resolve().parent
    parent.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(parent).free
    if need_bytes > free:
        raise PreflightError(
            f"{dest}: {what} needs about {need_bytes / 1e9:.2f} GB but only "
            f"{free / 1e9:.2f} GB are free in {parent}; free space or move results_dir"
        )
    return {"need_bytes": int(need_bytes), "free_bytes": int(free)}


def stores_bytes(paths, names=None) -> float:
    """Uncompressed bytes of every array (only those called ``names``, if given) of the zarr
    stores ``paths``: an upper bound of what a store built from them takes on disk."""
    return input_mb(list(paths), names=names) * MB


def _dim(arrays: Mapping, name: str, path) -> int:
    for a in arrays.values():
        if name in a.dims:
            return a.shape[a.dims.index(name)]
    raise PreflightError(f"{path}: no array has the dimension {name!r}; is it a neural store?")


def layer_widths(activations: str | os.PathLike) -> dict[str, int]:
    """Units of each layer of an activation store (its arrays' shape after ``image``)."""
    out = {}
    for name, a in store_arrays(activations).items():
        if name.endswith("/activations") and a.dims and a.dims[0] == "image":
            out[name.removesuffix("/activations")] = math.prod(a.shape[1:])
    return out


def compare_model_peak_mb(neural, activations, cfg: Mapping, cell_cells: int | None = None) -> dict:
    """Estimated peak (MB) of one compare_model job: the neural store, loaded whole, and the
    widest streamed block: ``min(width, compare.unit_chunk)`` units of every image (float32,
    about three copies) with the per-cell metrics' ``cells x units x 4 B`` per fold
    (``cell_cells``: the cells of the per-cell metrics, default every cell)."""
    arrays = store_arrays(neural)
    if not arrays:
        raise PreflightError(f"{neural}: not a zarr store (no zarr.json metadata)")
    widths = layer_widths(activations)
    if not widths:
        raise PreflightError(f"{activations}: no layer arrays (group/activations) in its metadata")
    cells, images = _dim(arrays, "cell", neural), _dim(arrays, "image", neural)
    neural_mb = sum(a.mb for a in arrays.values())
    layer, width = max(widths.items(), key=lambda kv: kv[1])
    cfg = {**defaults("compare"), **cfg}
    units = min(width, int(cfg["unit_chunk"]))
    folds = int(cfg["n_folds"])
    cell_cells = cells if cell_cells is None else int(cell_cells)
    block_mb = units * 4 * (3 * images + cell_cells * folds) / MB
    return {
        "peak_mb": math.ceil(BASELINE_MB + 1.5 * neural_mb + block_mb),
        "neural_mb": round(neural_mb, 1),
        "block_mb": round(block_mb, 1),
        "widest_layer": layer,
        "widest_units": width,
        "block_units": units,
        "cells": cells,
        "cell_metric_cells": cell_cells,
        "images": images,
    }


def check_compare_model(
    neural, activations, cfg: Mapping, mem_mb: int | None, cell_cells: int | None = None
) -> dict:
    """Refuse a compare_model job whose estimated peak is over the ``mem_mb`` its rule
    declares (no check without one); returns the estimate."""
    est = compare_model_peak_mb(neural, activations, cfg, cell_cells)
    log.info("preflight: %s", est)
    if mem_mb and est["peak_mb"] > int(mem_mb):
        raise PreflightError(
            f"{activations}: layer {est['widest_layer']!r} ({est['widest_units']} units) in "
            f"blocks of compare.unit_chunk={est['block_units']} units against "
            f"{est['cells']} cells x {est['images']} images of {neural} would peak at about "
            f"{est['peak_mb']} MB, over the job's mem_mb={mem_mb}. Lower compare.unit_chunk, "
            "or raise resources: {compare_model: {mem_mb: ...}}"
        )
    return est
