"""All per-model result stores into one labelled store (dask) and tidy tables."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from ..io import as_str, concat_stores, open_zarr
from .registry import METRICS, cell_variables

LAYER_VARS = ("layer_index", "layer_depth", "n_units", "layer_kind")
LAYER_FILL = {"layer_index": -1, "n_units": 0, "layer_kind": "", "n_cells": 0}


def fill_values() -> dict:
    """Fill value of each variable where a model lacks a layer: the registry's per-cell
    variables, the layer coordinates and the group cell counts (NaN for the rest)."""
    return {**{k: v.fill for k, v in cell_variables().items()}, **LAYER_FILL}


def open_store(path) -> xr.Dataset:
    """A result store (per model or aggregated), lazily."""
    return open_zarr(path)


def aggregate(
    paths: Sequence, models: Sequence[str] | None = None, load: bool = False
) -> xr.Dataset:
    """One Dataset with dims (metric, group, model, layer[, cell]), lazily (dask) concatenated,
    or from stores loaded into memory first (``load``: small inputs, where dask's per-task
    overhead would be most of the work).

    Layers are the union over models (NaN where a model has no such layer); each model's own
    layer order is in `layer_index` / `layer_depth` (model, layer).
    """
    models = (
        list(models) if models is not None else [Path(p).name.removesuffix(".zarr") for p in paths]
    )
    parts = []
    for name, p in zip(models, paths, strict=True):
        ds = open_store(p)
        if load:
            ds = ds.load()
        ds = ds.reset_coords([c for c in LAYER_VARS if c in ds.coords])
        ds.attrs = {}
        parts.append(ds.expand_dims(model=[name]))
    fill = {**{v: np.nan for v in parts[0].data_vars}, **fill_values()}
    out = concat_stores(parts, "model", coords="minimal", compat="override", fill_value=fill)
    out = out.set_coords([c for c in LAYER_VARS if c in out])
    # uniform chunks for zarr: one model per chunk, everything else whole
    out = out.chunk({d: 1 if d == "model" else -1 for d in out.dims})
    for v in out.variables.values():
        v.encoding = {}
    out.attrs["models"] = list(models)
    return out


#: group-level variables (metric, group, model, layer) of the tidy table
SCORE_VARS = ("score", "ci_low", "ci_high", "null_mean", "null_sd", "p", "q")
SCORE_VARS += ("score_corrected", "z")
COLUMNS = (
    "model",
    "layer",
    "layer_index",
    "layer_depth",
    "group_by",
    "group",
    "group_value",
    "metric",
    *SCORE_VARS,
    "significant",
    "ceiling",
    "ceiling_inter_animal",
    "score_ceiled",
    "ci_low_ceiled",
    "ci_high_ceiled",
    "n_cells",
)


def tidy(ds: xr.Dataset, fdr_alpha: float | None = None) -> pd.DataFrame:
    """Long table, one row per (model, layer, group, metric): the score with its bootstrap
    interval, its permutation null (mean, sd), p, BH q, ``significant`` (q < fdr_alpha;
    default the store's), the null-corrected score and z, the ceiling and the score and
    interval divided by it (where the metric has a ceiling), the inter-animal ceiling of a
    mapping metric (beside it; nothing is divided by it), and the group's cell count."""
    # the group-level variables only: the per-cell ones (model x layer x cell) stay on disk
    keep = [v for v in (*SCORE_VARS, "ceiling", "ceiling_inter_animal", "n_cells") if v in ds]
    ds = ds[keep].load()
    alpha = float(ds.attrs.get("fdr_alpha", 0.05) if fdr_alpha is None else fdr_alpha)
    df = ds[[v for v in SCORE_VARS if v in ds]].to_dataframe().reset_index()
    df = df.dropna(subset=["score"])
    group_vars = [v for v in ("ceiling", "ceiling_inter_animal", "n_cells") if v in ds]
    ceil = ds[group_vars].to_dataframe().reset_index()
    df = df.merge(
        ceil[["model", "metric", "group", *group_vars]],
        on=["model", "metric", "group"],
        how="left",
    )
    if "q" in df:
        df["significant"] = df["q"] < alpha
    with np.errstate(invalid="ignore", divide="ignore"):
        for col, src in (("score_ceiled", "score"), ("ci_low_ceiled", "ci_low")):
            df[col] = df[src] / df["ceiling"]  # NaN where a metric has no ceiling
        df["ci_high_ceiled"] = df["ci_high"] / df["ceiling"]
    df = df[[c for c in COLUMNS if c in df]]
    df["layer_index"] = df["layer_index"].astype(np.int64)
    return df.sort_values(["model", "metric", "group", "layer_index"]).reset_index(drop=True)


def bottom_up(ds: xr.Dataset, fdr_alpha: float | None = None) -> pd.DataFrame:
    """Per cell, model and per-cell metric: the best layer (and unit for the RF metrics)
    among the layers where the cell's score is significant (BH q < fdr_alpha over the
    model's layers x cells); ``best_layer`` is "none" where no layer is."""
    alpha = float(ds.attrs.get("fdr_alpha", 0.05) if fdr_alpha is None else fdr_alpha)
    rows = []
    cell_cols = {
        c: ds[c].values for c in ("area", "cre_line", "ei_class", "selected") if c in ds.coords
    }
    for spec in METRICS.values():
        if spec.kind != "cell" or spec.cell_var not in ds:
            continue
        lower, qvar = not spec.higher_is_better, f"{spec.name}_q"
        for mi, model in enumerate(ds["model"].values):
            # one model's (cell, layer) at a time: memory bounded by a model, not the zoo
            one = ds.isel(model=mi)
            x = one[spec.cell_var].transpose("cell", "layer").values
            q = one[qvar].transpose("cell", "layer").values if qvar in ds else None
            ok = np.isfinite(x).any(1)
            if not ok.any():
                continue
            sig = np.isfinite(x) if q is None else np.isfinite(x) & (q < alpha)
            filled = np.where(sig, x, np.inf if lower else -np.inf)
            best = np.argmin(filled, 1) if lower else np.argmax(filled, 1)
            found = sig.any(1)
            at = np.arange(len(x))
            frame = pd.DataFrame(
                {
                    "cell": ds["cell"].values,
                    "model": model,
                    "metric": spec.name,
                    "best_layer": np.where(found, as_str(ds["layer"].values)[best], "none"),
                    "value": np.where(found, x[at, best], np.nan),
                    "q": np.where(found, q[at, best], np.nan) if q is not None else np.nan,
                    **{c: val for c, val in cell_cols.items()},
                }
            )
            if spec.unit_var and spec.unit_var in ds:
                u = one[spec.unit_var].transpose("cell", "layer").values
                frame["best_unit"] = np.where(found, u[at, best], -1)
            rows.append(frame[ok])
    if not rows:
        return pd.DataFrame()
    return pd.concat(rows, ignore_index=True)
