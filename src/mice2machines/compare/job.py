"""The per-model job: stream every layer once, compute every metric against every group."""

from __future__ import annotations

import logging
import time
import warnings

import numpy as np
import pandas as pd
import xarray as xr

from .. import receptive_fields as rf
from .. import similarity as sim
from ..io import as_str
from . import settings

log = logging.getLogger("mice2machines")

#: quantiles of the activity (over images) of each neuron's best-matching unit (bottom-up)
QUANTILES = (0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0)


# --------------------------------------------------------------------------- activation stores


def _fallback_list_layers(path) -> pd.DataFrame:
    import zarr

    root = zarr.open_group(str(path), mode="r")
    names = root.attrs.get("layers")
    if names and isinstance(names[0], dict):
        names = [d["name"] for d in names]
    return pd.DataFrame({"name": list(names) if names else sorted(root.group_keys())})


def _fallback_open_layer(path, layer) -> xr.DataArray:
    return xr.open_zarr(str(path), group=layer, consolidated=False)["activations"]


def activation_api():
    """(list_layers, open_layer) of mice2machines.activations, or a reader of the same layout."""
    try:
        from ..activations import list_layers, open_layer
    except ImportError:
        return _fallback_list_layers, _fallback_open_layer
    return list_layers, open_layer


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


# --------------------------------------------------------------------------- summaries


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


def cell_bootstrap_ci(
    values: np.ndarray, membership: np.ndarray, n_boot: int, seed: int, level: float
) -> tuple[np.ndarray, np.ndarray]:
    """(groups,) percentile CI of the group median over cells resampled with replacement."""
    rng = np.random.default_rng(seed)
    lo = np.full(len(membership), np.nan)
    hi = np.full(len(membership), np.nan)
    for g, m in enumerate(membership):
        v = values[m]
        v = v[np.isfinite(v)]
        if len(v) == 0 or n_boot == 0:
            continue
        meds = np.median(v[rng.integers(0, len(v), (n_boot, len(v)))], axis=1)
        lo[g], hi[g] = sim.percentile_ci(meds, level)
    return lo, hi


# --------------------------------------------------------------------------- the job


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
    cfg = settings(cfg)
    metrics = list(cfg["metrics"])
    for m in metrics:
        sim.get_metric(m)
    device = sim.resolve_device(cfg["device"])
    dtype = np.dtype(cfg["dtype"])
    seed = int(cfg["seed"])
    list_layers, open_layer = activation_api()
    table = list_layers(activations_path)
    layers = [str(v) for v in table["name" if "name" in table else "layer"]]
    dup_of = (
        table["duplicate_of"].fillna("").astype(str).tolist()
        if "duplicate_of" in table
        else [""] * len(layers)
    )
    model = model or str(activations_path)

    R = np.asarray(neural["responses"].values, dtype=np.float64)  # (cell, image)
    n = R.shape[1]
    membership_all = np.asarray(neural["membership"].values, dtype=bool)
    selected = np.asarray(selected, dtype=np.int64)
    cell_pos = selected if cfg["cell_metrics_on"] == "selected" else np.arange(len(R))
    is_sel = np.isin(cell_pos, selected)
    Y = R[cell_pos].T  # (image, cells)
    membership = membership_all[:, cell_pos]
    F = np.asarray(neural["stimulus_matrix"].values, dtype=np.float64).reshape(n, -1)
    maps_sel = np.asarray(neural["maps"].values[cell_pos[is_sel]], dtype=np.float64)
    maps_sel = maps_sel.reshape(len(maps_sel), -1)
    center, norm = bool(cfg["map_center"]), cfg["map_normalize"]
    folds = sim.kfold(n, int(cfg["n_folds"]), seed)
    want = set(metrics)
    do_match = "match" in want
    do_ridge = "ridge" in want
    do_rf, do_rfn = "rf_rmse" in want, "rf_rmse_neurn" in want
    neurn_cfg = dict(cfg["neurn"])
    no_mean = bool(cfg["rsa_remove_mean_pattern"])
    n_cells, L = len(cell_pos), len(layers)
    log.info(
        "model %s: %d layers, %d cells for per-cell metrics (%d selected), device %s",
        model,
        L,
        n_cells,
        int(is_sel.sum()),
        device,
    )

    grams, rdms, n_units, kinds = [], [], [], []
    per_cell = {
        k: np.full((L, n_cells), np.nan)
        for k in ("ridge_r", "match_r", "rf_rmse", "rf_mean_rmse", "rf_rmse_neurn")
    }
    units = {k: np.full((L, n_cells), -1, dtype=np.int64) for k in ("rf_unit", "rf_unit_neurn")}
    match_unit = np.full((L, len(folds), n_cells), -1, dtype=np.int64)
    act_q = np.full((L, n_cells, len(QUANTILES)), np.nan)
    preds = {k: np.full((L, n_cells, n), np.nan, dtype=np.float32) for k in ("ridge", "match")}
    match_block = max(1024, (1 << 28) // max(n_cells, 1))

    done: dict[str, int] = {}
    for li, name in enumerate(layers):
        t0 = time.perf_counter()
        if dup_of[li] in done:  # a byte-identical copy of an earlier layer: reuse its results
            src = done[dup_of[li]]
            grams.append(grams[src])
            rdms.append(rdms[src])
            n_units.append(n_units[src])
            kinds.append(kinds[src])
            for arr in (*per_cell.values(), *units.values(), match_unit, act_q, *preds.values()):
                arr[li] = arr[src]
            log.info(
                "model %s layer %s (%d/%d): duplicate of %s", model, name, li + 1, L, dup_of[li]
            )
            continue
        done[name] = li
        da = open_layer(activations_path, name)
        if "image" in da.coords and "image" in neural.coords:
            da = da.sel(image=neural["image"].values)
        spatial = da.ndim == 4
        gram = sim.GramAccumulator(n, device=device, dtype=dtype)
        match = sim.MatchAccumulator(Y, folds, device=device, dtype=dtype) if do_match else None
        acc_rf = rf.RMSEAccumulator(maps_sel) if do_rf else None
        neurn_t, neurn_s = [], []
        total = int(np.prod(da.shape[1:]))
        for start, block in iter_unit_chunks(da, int(cfg["unit_chunk"])):
            flat = block.reshape(n, -1)
            gram.update(flat)
            if match is not None:  # sub-blocks keep the (cells x units) product near 1 GiB
                for lo in range(0, flat.shape[1], match_block):
                    match.update(flat[:, lo : lo + match_block])
            if acc_rf is not None:
                T = rf.channel_activity(block)[0] if spatial else flat
                acc_rf.update(rf.unit_maps(T, F, center, norm), activity=T)
            if do_rfn and spatial and block.shape[2] * block.shape[3] > 1:  # NeuRN needs space
                t, s = rf.channel_activity(block, neurn_cfg, device=device)
                neurn_t.append(t)
                neurn_s.append(s)
            log.info(
                "model %s layer %s: units %d-%d of %d",
                model,
                name,
                start,
                start + flat.shape[1],
                total,
            )
        grams.append(gram.gram())
        rdms.append(gram.rdm(remove_mean_pattern=no_mean))
        n_units.append(total)
        kinds.append("spatial" if spatial else "flat")
        if do_ridge:
            pred, _ = sim.ridge_cv(grams[-1], Y, cfg["ridge_alphas"], folds)
            preds["ridge"][li] = pred.T
            per_cell["ridge_r"][li] = sim.pearson_rows(pred.T, Y.T)
        if match is not None:
            res = match.result()
            preds["match"][li] = res["prediction"].T
            per_cell["match_r"][li] = sim.pearson_rows(res["prediction"].T, Y.T)
            match_unit[li] = res["best_unit"]
        if acc_rf is not None:
            res = acc_rf.result()
            per_cell["rf_rmse"][li, is_sel] = res["best_rmse"]
            per_cell["rf_mean_rmse"][li, is_sel] = res["mean_rmse"]
            units["rf_unit"][li, is_sel] = res["best_unit"]
            if "best_activity" in res:  # the best unit's activity distribution over images
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    act_q[li, is_sel] = np.nanquantile(res["best_activity"], QUANTILES, axis=1).T
        if neurn_t:
            T = np.concatenate(neurn_t, axis=1)
            if neurn_s[0] is not None:
                scale = np.max(np.stack(neurn_s), axis=0)
                T = T / np.where(scale > 0, scale, 1.0)[:, None]
            acc = rf.RMSEAccumulator(maps_sel)
            acc.update(rf.unit_maps(T, F, center, norm))
            res = acc.result()
            per_cell["rf_rmse_neurn"][li, is_sel] = res["best_rmse"]
            units["rf_unit_neurn"][li, is_sel] = res["best_unit"]
        log.info(
            "model %s layer %s (%d/%d): %d units in %.1f s",
            model,
            name,
            li + 1,
            L,
            total,
            time.perf_counter() - t0,
        )

    # ---- group-level scores
    groups = neural["group"].values
    G = len(groups)
    pos = [np.flatnonzero(m) for m in membership_all]
    neural_reps = sim.Representations.from_arrays(
        [R[p].T for p in pos], list(groups), dtype=np.float64, remove_mean_pattern=no_mean
    )
    model_reps = sim.Representations(layers, np.stack(grams), np.stack(rdms))
    score = np.full((len(metrics), G, L), np.nan)
    ci_lo, ci_hi = np.full_like(score, np.nan), np.full_like(score, np.nan)
    ceiling = np.full((len(metrics), G), np.nan)
    n_in_group = np.zeros((len(metrics), G), dtype=np.int64)
    n_boot, level = int(cfg["n_boot"]), float(cfg["ci_level"])
    boot_idx = sim.bootstrap_indices(n, n_boot, seed)
    rep_metrics = [m for m in metrics if sim.get_metric(m).kind == "representation"]
    boots = (
        sim.bootstrap_representation(neural_reps, model_reps, rep_metrics, boot_idx)
        if rep_metrics and n_boot
        else {}
    )
    neural_ceiling = neural["ceiling"].to_series() if "ceiling" in neural else None
    reliability = np.asarray(neural["reliability"].values, dtype=np.float64)[cell_pos]
    for mi, m in enumerate(metrics):
        spec = sim.get_metric(m)
        if spec.kind == "representation":
            score[mi] = spec.fn(neural_reps, model_reps)
            if m in boots:
                ci_lo[mi], ci_hi[mi] = sim.percentile_ci(boots[m], level, estimate=score[mi])
            if neural_ceiling is not None and m in neural["metric"].values:
                ceiling[mi] = neural["ceiling"].sel(metric=m).values
            n_in_group[mi] = membership_all.sum(1)
            continue
        values = {
            "ridge": per_cell["ridge_r"],
            "match": per_cell["match_r"],
            "rf_rmse": per_cell["rf_rmse"],
            "rf_rmse_neurn": per_cell["rf_rmse_neurn"],
        }[m]
        score[mi] = group_median(values.T, membership)
        n_in_group[mi] = (membership & np.isfinite(values).any(0)[None]).sum(1)
        if m in ("ridge", "match"):
            ceiling[mi] = group_median(reliability[:, None], membership)[:, 0]
            if n_boot:
                for li in range(L):
                    br = sim.bootstrap_cell_r(preds[m][li], Y.T, boot_idx)  # (boot, cells)
                    meds = group_median(br.T, membership)  # (G, boot)
                    ci_lo[mi, :, li], ci_hi[mi, :, li] = sim.percentile_ci(
                        meds, level, axis=1, estimate=score[mi, :, li]
                    )
        elif n_boot:
            for li in range(L):
                ci_lo[mi, :, li], ci_hi[mi, :, li] = cell_bootstrap_ci(
                    values[li], membership, n_boot, seed + li, level
                )

    cells = neural["cell"].values[cell_pos]
    cell_coords = {"cell": cells, "selected": ("cell", is_sel)}
    for c in ("area", "cre_line", "ei_class", "experiment_id"):
        if c in neural.coords:
            cell_coords[c] = ("cell", neural[c].values[cell_pos])
    depth = (
        table["depth"].to_numpy(dtype=np.float64)
        if "depth" in table
        else np.arange(L) / max(L - 1, 1)
    )
    ds = xr.Dataset(
        {
            "score": (("metric", "group", "layer"), score),
            "ci_low": (("metric", "group", "layer"), ci_lo),
            "ci_high": (("metric", "group", "layer"), ci_hi),
            "ceiling": (("metric", "group"), ceiling),
            "n_cells": (("metric", "group"), n_in_group),
            "ridge_r": (("layer", "cell"), per_cell["ridge_r"]),
            "match_r": (("layer", "cell"), per_cell["match_r"]),
            "match_unit": (("layer", "fold", "cell"), match_unit),
            "rf_rmse": (("layer", "cell"), per_cell["rf_rmse"]),
            "rf_mean_rmse": (("layer", "cell"), per_cell["rf_mean_rmse"]),
            "rf_unit": (("layer", "cell"), units["rf_unit"]),
            "rf_rmse_neurn": (("layer", "cell"), per_cell["rf_rmse_neurn"]),
            "rf_unit_neurn": (("layer", "cell"), units["rf_unit_neurn"]),
            "rf_unit_activity": (("layer", "cell", "quantile"), act_q),
        },
        coords={
            "metric": metrics,
            "group": as_str(groups),
            "group_by": ("group", as_str(neural["group_by"].values)),
            "group_value": ("group", as_str(neural["group_value"].values)),
            "layer": np.asarray(layers, dtype=str),
            "layer_index": ("layer", np.arange(L)),
            "layer_depth": ("layer", depth),
            "n_units": ("layer", np.asarray(n_units, dtype=np.int64)),
            "layer_kind": ("layer", np.asarray(kinds, dtype=str)),
            "fold": np.arange(len(folds)),
            "quantile": np.asarray(QUANTILES),
            **cell_coords,
        },
        attrs={
            "model": model,
            "n_boot": n_boot,
            "ci_level": level,
            "device": device,
            "rsa_remove_mean_pattern": int(no_mean),
        },
    )
    ds["score"].attrs["description"] = "; ".join(
        f"{m}: {sim.get_metric(m).description}" for m in metrics
    )
    return ds
