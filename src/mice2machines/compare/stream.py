"""Streaming a layer: one pass over its units feeds the Gram engine and every cell metric's
scorer, so that each layer is read from its store exactly once."""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import xarray as xr

from ..models.store import open_layer
from .gram import GramAccumulator
from .inference import p_values
from .projection import Projector

if TYPE_CHECKING:
    from .job import Job

log = logging.getLogger("mice2machines")


def iter_unit_chunks(da: xr.DataArray, unit_chunk: int = 65536):
    """Yield (first unit, block) with block (image, channel, y, x) or (image, unit) numpy.

    Slices follow the store's own chunks along the channel/unit axis where it has them,
    merged until each block holds about `unit_chunk` units.
    """
    if da.dims[0] != "image" or da.ndim not in (2, 4):
        raise ValueError(
            f"activations must be (image, channel, y, x) or (image, unit), got {da.dims}"
        )
    axis = da.dims[1]
    n = da.shape[1]
    per = int(np.prod(da.shape[2:])) if da.ndim == 4 else 1
    step = max(1, int(unit_chunk) // per)
    bounds = [0]
    if da.chunks is not None:
        edges = np.cumsum((0,) + tuple(da.chunks[1]))
        for e in edges[1:]:
            if e - bounds[-1] >= step or e == n:
                bounds.append(int(e))
    else:
        bounds = list(range(0, n, step)) + [n]
    units_done = 0
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        block = np.asarray(da.isel({axis: slice(lo, hi)}).values, dtype=np.float32)
        yield units_done, block
        units_done += block[0].size


@dataclasses.dataclass
class Layer:
    """What one layer contributed: its Gram statistics and every cell metric's results."""

    name: str
    gram: np.ndarray
    rdm: np.ndarray
    n_units: int
    kind: str
    cells: dict  # per-cell variables of the cell metrics
    predictions: dict  # metric -> (cells, images) float32 held-out predictions
    nulls: dict  # metric -> (n_perm, cells) cell scores under the permutations
    mapping_gram: np.ndarray | None = None  # the mapping metrics' Gram (projected units)
    mapping_units: int | None = None

    @property
    def mapping(self) -> np.ndarray:
        """The Gram the mapping metrics (ridge, PLS) fit: of the randomly projected units
        where compare.random_projection is on and the layer is wider than its target."""
        return self.gram if self.mapping_gram is None else self.mapping_gram


def stream_layer(job: Job, path, name: str, index: str) -> Layer:
    """One pass over a layer's units: the Gram engine and every cell metric's scorer."""
    da = open_layer(path, name)
    if "image" in da.coords and "image" in job.neural.coords:
        da = da.sel(image=job.neural["image"].values)
    n, ctx = job.ctx.n_images, job.ctx
    gram = GramAccumulator(n, device=ctx.device, dtype=ctx.dtype)
    scorers = {m.name: m.layer(ctx) for m in job.cell_metrics}
    total = int(np.prod(da.shape[1:]))
    rp = job.cfg["random_projection"]
    proj = None
    if rp["enabled"]:
        seed = int(job.cfg["seed"])
        proj = Projector(n, total, rp["eps"], rp["n_components"], seed, cache=ctx.cache)
        log.info(
            "model %s layer %s %s: %s",
            job.model,
            name,
            index,
            f"random projection of {total} units to {proj.dim}"
            if proj.active
            else f"{total} units, no wider than the projection: not projected",
        )
    for start, block in iter_unit_chunks(da, int(job.cfg["unit_chunk"])):
        flat = block.reshape(n, -1)
        gram.update(flat)
        if proj is not None:
            proj.update(flat)
        for scorer in scorers.values():
            scorer.update(block)
        log.info(
            "model %s layer %s %s: units %d-%d of %d",
            job.model,
            name,
            index,
            start,
            start + flat.shape[1],
            total,
        )
    layer = Layer(
        name=name,
        gram=gram.gram(),
        rdm=gram.rdm(remove_mean_pattern=bool(job.cfg["rsa_remove_mean_pattern"])),
        n_units=total,
        kind="spatial" if da.ndim == 4 else "flat",
        cells={},
        predictions={},
        nulls={},
    )
    if proj is not None and proj.active:
        layer.mapping_gram, layer.mapping_units = proj.gram(), proj.dim
    for metric in job.cell_metrics:
        t0 = time.perf_counter()
        res = scorers[metric.name].result(layer)
        pred, null = res.pop("prediction", None), res.pop("null", None)
        if pred is not None:
            layer.predictions[metric.name] = np.asarray(pred, dtype=np.float32)
        layer.nulls[metric.name] = null
        layer.cells.update(res)
        score = res[metric.cell_var]
        if null is not None:
            p = p_values(score, null, metric.higher_is_better)
        else:
            p = np.full_like(score, np.nan, dtype=np.float64)
        layer.cells[f"{metric.name}_p"] = p
        log.info(
            "model %s layer %s %s: %s, null of %d permutations, in %.1f s",
            job.model,
            name,
            index,
            metric.name,
            0 if null is None else len(null),
            time.perf_counter() - t0,
        )
    return layer


def stream_layers(job: Job, path, table: pd.DataFrame) -> list[Layer]:
    """Every layer of the store once; a byte-identical copy of an earlier layer (the table's
    ``duplicate_of``) reuses that layer's results."""
    names = [str(v) for v in table["layer"]]
    dup_of = table["duplicate_of"].fillna("").astype(str).tolist()
    done: dict[str, Layer] = {}
    layers = []
    for li, name in enumerate(names):
        index = f"({li + 1}/{len(names)})"
        t0 = time.perf_counter()
        if dup_of[li] in done:
            layers.append(dataclasses.replace(done[dup_of[li]], name=name))
            log.info("model %s layer %s %s: duplicate of %s", job.model, name, index, dup_of[li])
            continue
        layer = stream_layer(job, path, name, index)
        done[name] = layer
        layers.append(layer)
        log.info(
            "model %s layer %s %s: %d units in %.1f s",
            job.model,
            name,
            index,
            layer.n_units,
            time.perf_counter() - t0,
        )
    return layers
