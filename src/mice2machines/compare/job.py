"""The per-model job: stream every layer once, compute every metric against every group.

``compare_model`` = open the job -> stream the layers (each layer's Gram statistics and every
cell metric's scorer fed from one pass over its units) -> group scores (with ceilings,
bootstrap intervals and permutation nulls) -> one labelled Dataset. What each metric
computes, and how its groups, ceilings, intervals and nulls are formed, comes from the metric
registry.

Significance: every score is tested against its permutation null (the image labels of the
neural data permuted; the same permutations for every layer and model of a run, seeded by
compare.seed): p = (1 + #{null at least as good}) / (1 + n_perm), Benjamini-Hochberg q over
the model's layers x groups (per metric; per cell: over layers x cells), and the
null-corrected score (score - null mean) with its z.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import warnings

import numpy as np
import pandas as pd
import xarray as xr

from ..devices import resolve_device
from ..io import as_str
from ..models.store import list_layers
from . import settings
from .bootstrap import (
    bootstrap_cell_r,
    bootstrap_fold_r,
    bootstrap_indices,
    bootstrap_representation,
    cell_bootstrap_ci,
    percentile_ci,
    resampled,
)
from .crossval import kfold
from .gram import Representations
from .inference import bh_q, group_null_median, null_summary, permutations
from .registry import NULL_COUNTS, JobContext, Metric, get_metric
from .stream import Layer, stream_layers

log = logging.getLogger("mice2machines")


def group_median(values: np.ndarray, membership: np.ndarray) -> np.ndarray:
    """(groups, ...) NaN-median over each group's cells of values (cells, ...)."""
    out = np.full((len(membership),) + values.shape[1:], np.nan)
    for g, m in enumerate(membership):
        if m.any():
            v = values[m]
            if np.isfinite(v).any():
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    out[g] = np.nanmedian(v, axis=0)
    return out


# --------------------------------------------------------------------------- the job


@dataclasses.dataclass
class Job:
    """One model against the prepared neural store: settings, cells, folds, metrics."""

    cfg: dict
    model: str
    metrics: list[Metric]
    ctx: JobContext
    R: np.ndarray  # (cells of the store, images)
    membership_all: np.ndarray  # (groups, cells of the store)
    cell_pos: np.ndarray  # the job's cells (positions in the store)
    neural: xr.Dataset

    @property
    def membership(self) -> np.ndarray:
        """(groups, job cells)."""
        return self.membership_all[:, self.cell_pos]

    @property
    def cell_metrics(self) -> list[Metric]:
        return [m for m in self.metrics if m.kind == "cell"]


def open_job(neural: xr.Dataset, selected: np.ndarray, cfg: dict, model: str) -> Job:
    """The neural side of one model's job: cells, folds and the scorers' context."""
    R = np.asarray(neural["responses"].values, dtype=np.float64)  # (cell, image)
    n = R.shape[1]
    counts = {key: int(cfg[key]) for key in NULL_COUNTS}
    drawn = permutations(n, max(counts.values()), int(cfg["seed"]))
    selected = np.asarray(selected, dtype=np.int64)
    cell_pos = selected if cfg["cell_metrics_on"] == "selected" else np.arange(len(R))
    is_sel = np.isin(cell_pos, selected)
    maps = np.asarray(neural["maps"].values[cell_pos[is_sel]], dtype=np.float64)
    F = np.asarray(neural["stimulus_matrix"].values, dtype=np.float64).reshape(n, -1)
    ctx = JobContext(
        Y=R[cell_pos].T,
        folds=kfold(n, int(cfg["n_folds"]), int(cfg["seed"])),
        selected=is_sel,
        maps=maps.reshape(len(maps), -1),
        stimulus_matrix=F,
        device=resolve_device(cfg["device"]),
        dtype=np.dtype(cfg["dtype"]),
        cfg=cfg,
        perms={key: drawn[:c] for key, c in counts.items()},
    )
    return Job(
        cfg=cfg,
        model=model,
        metrics=[get_metric(m) for m in cfg["metrics"]],
        ctx=ctx,
        R=R,
        membership_all=np.asarray(neural["membership"].values, dtype=bool),
        cell_pos=cell_pos,
        neural=neural,
    )


def per_cell(job: Job, layers: list[Layer]) -> dict[str, np.ndarray]:
    """(layer, ...) arrays of every per-cell variable of the cell metrics, with each cell's
    p-value and its Benjamini-Hochberg q over the model's layers x cells."""
    out = {}
    for metric in job.cell_metrics:
        for var in metric.variables:
            out[var] = np.stack([layer.cells[var] for layer in layers])
        p = np.stack([layer.cells[f"{metric.name}_p"] for layer in layers])
        out[f"{metric.name}_p"] = p
        out[f"{metric.name}_q"] = bh_q(p)
    return out


def representation_null(m: Metric, neural: Representations, model: Representations, job: Job):
    """(n_perm, groups, layers) null of a representation metric: its own batched rule, else
    each permutation rescored."""
    perms = job.ctx.perms[m.null_perms]
    if not len(perms):
        return None
    if m.null is not None:
        return m.null(neural, model, perms, job.ctx.device)
    return np.stack([m.score(resampled(neural, p), model) for p in perms])


def cell_null(m: Metric, layers: list[Layer], membership: np.ndarray):
    """(n_perm, groups, layers) null of a cell metric's group medians."""
    nulls = [layer.nulls.get(m.name) for layer in layers]
    if all(n is None for n in nulls):
        return None
    P = next(len(n) for n in nulls if n is not None)
    empty = np.full((P, len(membership)), np.nan)  # a layer the metric has no value for
    return np.stack(
        [empty if n is None else group_null_median(n, membership) for n in nulls], axis=-1
    )


STATS = ("null_mean", "null_sd", "p", "q", "score_corrected", "z")


def significance(m: Metric, score: np.ndarray, null) -> dict[str, np.ndarray]:
    """null_mean, null_sd, p, q (BH over the groups x layers), score_corrected, z (G, L)."""
    if null is None:
        return {k: np.full(score.shape, np.nan) for k in STATS}
    s = null_summary(score, null, m.higher_is_better)
    return {
        "null_mean": s["null_mean"],
        "null_sd": s["null_sd"],
        "p": s["p"],
        "q": bh_q(s["p"]),
        "score_corrected": s["corrected"],
        "z": s["z"],
    }


def representations(job: Job, layers: list[Layer]) -> tuple[Representations, Representations]:
    """The neural groups' and the layers' Gram matrices and RDMs."""
    pos = [np.flatnonzero(m) for m in job.membership_all]
    neural = Representations.from_arrays(
        [job.R[p].T for p in pos],
        list(job.neural["group"].values),
        dtype=np.float64,
        remove_mean_pattern=bool(job.cfg["rsa_remove_mean_pattern"]),
    )
    neural.named = {v[4:]: job.neural[v].values for v in job.neural.data_vars if v[:4] == "rdm_"}
    model = Representations(
        [layer.name for layer in layers],
        np.stack([layer.gram for layer in layers]),
        np.stack([layer.rdm for layer in layers]),
    )
    return neural, model


def representation_row(job: Job, m: Metric, reps, boots: dict) -> dict[str, np.ndarray]:
    """One representation metric: score and interval (G, L), null statistics, ceiling (G,)."""
    neural, model = reps
    score = m.score(neural, model)
    row = {"score": score, "n_cells": job.membership_all.sum(1)}
    if m.name in boots:
        level = float(job.cfg["ci_level"])
        row["ci_low"], row["ci_high"] = percentile_ci(boots[m.name], level, estimate=score)
    if m.ceiling == "split_half" and m.name in job.neural["metric"].values:
        row["ceiling"] = job.neural["ceiling"].sel(metric=m.name).values
    t0 = time.perf_counter()
    null = representation_null(m, neural, model, job)
    row.update(significance(m, score, null))
    n = 0 if null is None else len(null)
    log.info(
        "model %s: %s null of %d permutations in %.1f s",
        job.model,
        m.name,
        n,
        time.perf_counter() - t0,
    )
    return row


def cell_row(job: Job, m: Metric, layers: list[Layer], cells: dict, boot_idx) -> dict:
    """One cell metric: group medians and their interval (G, L), null statistics, ceiling."""
    t0 = time.perf_counter()
    membership, values = job.membership, cells[m.cell_var]
    score = group_median(values.T, membership)
    row = {"score": score, "n_cells": (membership & np.isfinite(values).any(0)[None]).sum(1)}
    if m.ceiling == "reliability":
        rel = np.asarray(job.neural["reliability"].values, dtype=np.float64)[job.cell_pos]
        row["ceiling"] = group_median(rel[:, None], membership)[:, 0]
    row.update(inter_animal_ceiling(job.neural, m.name))
    row.update(significance(m, score, cell_null(m, layers, membership)))
    n_boot, level, seed = len(boot_idx), float(job.cfg["ci_level"]), int(job.cfg["seed"])
    if n_boot:
        lo, hi = np.full_like(score, np.nan), np.full_like(score, np.nan)
        for li, layer in enumerate(layers):
            if m.cell_bootstrap == "images":
                br = image_bootstrap(job, layer.predictions[m.name], boot_idx)
                meds = group_median(br.T, membership)  # (G, boot)
                lo[:, li], hi[:, li] = percentile_ci(meds, level, axis=1, estimate=score[:, li])
            else:
                lo[:, li], hi[:, li] = cell_bootstrap_ci(
                    values[li], membership, n_boot, seed + li, level
                )
        row["ci_low"], row["ci_high"] = lo, hi
    log.info(
        "model %s: %s group scores, %d bootstrap resamples over %s in %.1f s",
        job.model,
        m.name,
        n_boot,
        m.cell_bootstrap,
        time.perf_counter() - t0,
    )
    return row


def group_scores(job: Job, layers: list[Layer], cells: dict) -> dict[str, np.ndarray]:
    """score, ci_low, ci_high, the null statistics (metric, group, layer); ceiling, n_cells
    (metric, group): one row per metric, as its kind forms it."""
    n_boot, seed = int(job.cfg["n_boot"]), int(job.cfg["seed"])
    boot_idx = bootstrap_indices(job.ctx.n_images, n_boot, seed)
    rep = [m.name for m in job.metrics if m.kind == "representation"]
    reps, boots = None, {}
    if rep:
        t0 = time.perf_counter()
        reps = representations(job, layers)
        if n_boot:
            boots = bootstrap_representation(*reps, rep, boot_idx, job.ctx.device)
        log.info(
            "model %s: representation metrics %s, %d bootstrap resamples in %.1f s",
            job.model,
            rep,
            n_boot,
            time.perf_counter() - t0,
        )
    rows = [
        representation_row(job, m, reps, boots)
        if m.kind == "representation"
        else cell_row(job, m, layers, cells, boot_idx)
        for m in job.metrics
    ]
    G, L = len(job.membership_all), len(layers)
    out = {}
    for key in ("score", "ci_low", "ci_high", *STATS):
        out[key] = np.stack([r.get(key, np.full((G, L), np.nan)) for r in rows])
    for key in ("ceiling", "ceiling_inter_animal"):
        out[key] = np.stack([r.get(key, np.full(G, np.nan)) for r in rows])
    out["n_cells"] = np.stack([r["n_cells"] for r in rows]).astype(np.int64)
    return out


def inter_animal_ceiling(neural: xr.Dataset, metric: str) -> dict[str, np.ndarray]:
    """{"ceiling_inter_animal": (G,)} of a mapping metric from the neural store (prepare's
    ``ceiling_inter_animal``), or {} for a metric without one."""
    if "ceiling_inter_animal" not in neural or metric not in as_str(neural["mapping"].values):
        return {}
    return {"ceiling_inter_animal": neural["ceiling_inter_animal"].sel(mapping=metric).values}


def image_bootstrap(job: Job, prediction: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """(n_boot, cells) a prediction metric's score over resampled stimuli, formed as the
    score is (per fold, or pooled: compare.cv_score)."""
    how = job.cfg["cv_score"]
    if how == "pooled":
        return bootstrap_cell_r(prediction, job.ctx.Y.T, idx, device=job.ctx.device)
    fisher = how == "fold_mean_z"
    return bootstrap_fold_r(prediction, job.ctx.Y.T, job.ctx.folds, idx, fisher, job.ctx.device)


def to_dataset(job: Job, layers: list[Layer], table: pd.DataFrame, scores, cells) -> xr.Dataset:
    """The job's labelled store: group scores, per-cell variables, layer and cell coords."""
    neural, L = job.neural, len(layers)
    dims = {"score": ("metric", "group", "layer"), "ceiling": ("metric", "group")}
    data = {k: (dims["score"] if v.ndim == 3 else dims["ceiling"], v) for k, v in scores.items()}
    extra = {"fold": np.arange(len(job.ctx.folds))}
    for m in job.cell_metrics:
        for var, spec in {**m.variables, **m.stat_variables}.items():
            data[var] = (("layer", *spec.dims), cells[var].astype(spec.dtype))
            extra.update({k: np.asarray(v) for k, v in spec.coords.items()})
    cell_coords = {
        "cell": neural["cell"].values[job.cell_pos],
        "selected": ("cell", job.ctx.selected),
    }
    for c in ("area", "cre_line", "ei_class", "experiment_id", "mouse"):
        if c in neural.coords:
            cell_coords[c] = ("cell", neural[c].values[job.cell_pos])
    depth = (
        table["depth"].to_numpy(dtype=np.float64)
        if "depth" in table
        else np.arange(L) / max(L - 1, 1)
    )
    ds = xr.Dataset(
        data,
        coords={
            "metric": [m.name for m in job.metrics],
            "group": as_str(neural["group"].values),
            "group_by": ("group", as_str(neural["group_by"].values)),
            "group_value": ("group", as_str(neural["group_value"].values)),
            "layer": np.asarray([layer.name for layer in layers], dtype=str),
            "layer_index": ("layer", np.arange(L)),
            "layer_depth": ("layer", depth),
            "n_units": ("layer", np.asarray([la.n_units for la in layers], dtype=np.int64)),
            "layer_kind": ("layer", np.asarray([la.kind for la in layers], dtype=str)),
            **extra,
            **cell_coords,
        },
        attrs={
            "model": job.model,
            "n_boot": int(job.cfg["n_boot"]),
            "ci_level": float(job.cfg["ci_level"]),
            "device": job.ctx.device,
            "rsa_remove_mean_pattern": int(bool(job.cfg["rsa_remove_mean_pattern"])),
            "n_perm": int(job.cfg["n_perm"]),
            "n_perm_max": int(job.cfg["n_perm_max"]),
            "cv_score": job.cfg["cv_score"],
            "fdr_alpha": float(job.cfg["fdr_alpha"]),
        },
    )
    ds["score"].attrs["description"] = "; ".join(f"{m.name}: {m.description}" for m in job.metrics)
    return ds


def compare_model(
    activations_path,
    neural: xr.Dataset,
    selected: np.ndarray,
    cfg: dict | None = None,
    model: str | None = None,
) -> xr.Dataset:
    """All metrics of one model's layers against all neural groups, as one labelled Dataset.

    neural: the store of prepare_neural; selected: positions of the selected cells (the
    paper's RF analysis; also the per-cell metrics when compare.cell_metrics_on = selected).
    """
    job = open_job(neural, selected, settings(cfg), model or str(activations_path))
    table = list_layers(activations_path)
    log.info(
        "model %s: %d layers, %d cells for per-cell metrics (%d selected), device %s",
        job.model,
        len(table),
        job.ctx.n_cells,
        int(job.ctx.selected.sum()),
        job.ctx.device,
    )
    layers = stream_layers(job, activations_path, table)
    cells = per_cell(job, layers)
    scores = group_scores(job, layers, cells)
    return to_dataset(job, layers, table, scores, cells)
