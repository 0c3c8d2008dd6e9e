"""All per-model result stores into one labelled store (dask) and tidy tables."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from .registry import METRICS, cell_variables

LAYER_VARS = ("layer_index", "layer_depth", "n_units", "layer_kind")
LAYER_FILL = {"layer_index": -1, "n_units": 0, "layer_kind": "", "n_cells": 0}


def fill_values() -> dict:
    """Fill value of each variable where a model lacks a layer: the registry's per-cell
    variables, the layer coordinates and the group cell counts (NaN for the rest)."""
    return {**{k: v.fill for k, v in cell_variables().items()}, **LAYER_FILL}


def open_store(path) -> xr.Dataset:
    """A result store (per model or aggregated), lazily."""
    return xr.open_zarr(str(path), consolidated=False)


def aggregate(paths: Sequence, models: Sequence[str] | None = None) -> xr.Dataset:
    """One Dataset with dims (metric, group, model, layer[, cell]), lazily (dask) concatenated.

    Layers are the union over models (NaN where a model has no such layer); each model's own
    layer order is in `layer_index` / `layer_depth` (model, layer).
    """
    models = (
        list(models) if models is not None else [Path(p).name.removesuffix(".zarr") for p in paths]
    )
    parts = []
    for name, p in zip(models, paths, strict=True):
        ds = open_store(p)
        ds = ds.reset_coords([c for c in LAYER_VARS if c in ds.coords])
        ds.attrs = {}
        parts.append(ds.expand_dims(model=[name]))
    out = xr.concat(
        parts,
        dim="model",
        join="outer",
        coords="minimal",
        compat="override",
        data_vars="all",
        fill_value={**{v: np.nan for v in parts[0].data_vars}, **fill_values()},
    )
    out = out.set_coords([c for c in LAYER_VARS if c in out])
    # uniform chunks for zarr: one model per chunk, everything else whole
    out = out.chunk({d: 1 if d == "model" else -1 for d in out.dims})
    for v in out.variables.values():
        v.encoding = {}
    out.attrs["models"] = list(models)
    return out


def tidy(ds: xr.Dataset) -> pd.DataFrame:
    """Long table: model, layer, layer_index, layer_depth, group_by, group, metric, score,
    ci_low, ci_high, ceiling, score_ceiled (score / ceiling where the metric has a ceiling),
    n_cells."""
    ds = ds.load() if hasattr(ds, "load") else ds
    df = ds[["score", "ci_low", "ci_high"]].to_dataframe().reset_index()
    df = df.dropna(subset=["score"])
    ceil = ds[["ceiling", "n_cells"]].to_dataframe().reset_index()
    df = df.merge(
        ceil[["model", "metric", "group", "ceiling", "n_cells"]],
        on=["model", "metric", "group"],
        how="left",
    )
    with np.errstate(invalid="ignore", divide="ignore"):
        df["score_ceiled"] = df["score"] / df["ceiling"]  # NaN where a metric has no ceiling
    keep = [
        c
        for c in (
            "model",
            "layer",
            "layer_index",
            "layer_depth",
            "group_by",
            "group",
            "group_value",
            "metric",
            "score",
            "ci_low",
            "ci_high",
            "ceiling",
            "score_ceiled",
            "n_cells",
        )
        if c in df
    ]
    df = df[keep]
    df["layer_index"] = df["layer_index"].astype(np.int64)
    return df.sort_values(["model", "metric", "group", "layer_index"]).reset_index(drop=True)


def bottom_up(ds: xr.Dataset) -> pd.DataFrame:
    """Per cell, model and per-cell metric: the best layer (and unit for the RF metrics)."""
    ds = ds.load() if hasattr(ds, "load") else ds
    rows = []
    cell_cols = {
        c: ds[c].values for c in ("area", "cre_line", "ei_class", "selected") if c in ds.coords
    }
    for spec in METRICS.values():
        var, metric, lower, unit_var = (
            spec.cell_var,
            spec.name,
            not spec.higher_is_better,
            spec.unit_var,
        )
        if spec.kind != "cell" or var not in ds:
            continue
        v = ds[var].transpose("model", "cell", "layer").values
        for mi, model in enumerate(ds["model"].values):
            x = v[mi]
            ok = np.isfinite(x).any(1)
            if not ok.any():
                continue
            filled = np.where(np.isfinite(x), x, np.inf if lower else -np.inf)
            best = np.argmin(filled, 1) if lower else np.argmax(filled, 1)
            frame = pd.DataFrame(
                {
                    "cell": ds["cell"].values,
                    "model": model,
                    "metric": metric,
                    "best_layer": ds["layer"].values[best],
                    "value": x[np.arange(len(x)), best],
                    **{c: val for c, val in cell_cols.items()},
                }
            )
            if unit_var and unit_var in ds:
                u = ds[unit_var].transpose("model", "cell", "layer").values[mi]
                frame["best_unit"] = u[np.arange(len(u)), best]
            rows.append(frame[ok])
    if not rows:
        return pd.DataFrame()
    return pd.concat(rows, ignore_index=True)
