"""The response-table source: a user's xarray store (zarr or netCDF) as the population store.

The data contract (config/README.md, section `table`): a variable ``responses (cell, image[,
repeat])`` of numbers (NaN = a missing repeat); per-cell coordinates ``area`` and ``cre_line``
or ``ei_class`` (the other is derived where `labels` can; an unknown Cre line needs
``ei_class``); optional per-cell ``experiment_id`` (or ``session_id``), ``container_id``,
``imaging_depth``, ``mouse`` (default: one mouse per experiment; the inter-animal ceilings
need 2 or more); optional ``blank_responses (cell, blank)``; optional ``stimuli`` (or
``images``) ``(image, y, x[, channel])``, else ``table.stimuli`` names the stimulus set.

`validate` runs when the workflow is planned, so a bad table fails before any job; `population`
builds the same store as the NWB path (`population.population_dataset`); `summarize` says what a
table holds.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import xarray as xr

from . import labels
from .reliability import NO_CEILING
from .stimulus_sets import StimulusError, check_ids, open_stimuli, open_store, stimulus_array

log = logging.getLogger("mice2machines")


class TableError(ValueError):
    """A response table the workflow refuses: names the file, the key and the problem."""


def settings(cfg: dict | None) -> dict:
    """The `table` config section, validated, defaults filled (schemas/table.schema.yaml)."""
    from ..settings import section

    return section("table", cfg)


def open_table(path: str | Path) -> xr.Dataset:
    """A response table, opened lazily, with its `responses` checked for presence and type."""
    path = Path(path)
    if not path.exists():
        raise TableError(f"{path}: response table not found (table.path)")
    try:
        ds = open_store(path, "table.path")
    except StimulusError as err:
        raise TableError(str(err)) from err
    if "responses" not in ds:
        raise TableError(
            f"{path}: no `responses` variable (table.path); have {sorted(map(str, ds.data_vars))}"
        )
    resp = ds["responses"]
    if resp.dtype.kind not in "biuf":
        raise TableError(f"{path}: `responses` are {resp.dtype}, not numbers")
    dims = ("cell", "image", "repeat")
    if set(resp.dims) not in ({"cell", "image"}, set(dims)):
        raise TableError(
            f"{path}: `responses` has dims {resp.dims}; expected (cell, image[, repeat])"
        )
    return ds


def normalise(ds: xr.Dataset, path: str | Path) -> xr.Dataset:
    """The table as the population store's variables and coordinates (before reliability):
    `responses (cell, image, repeat)` float32, every per-cell coordinate filled."""
    resp = ds["responses"]
    if "repeat" not in resp.dims:
        resp = resp.expand_dims(repeat=1, axis=-1)
    resp = resp.transpose("cell", "image", "repeat").astype(np.float32)
    n_cell, n_img, n_rep = resp.shape
    out = xr.Dataset({"responses": resp.variable.copy()})
    out["responses"].attrs = {"long_name": "response", **ds["responses"].attrs}
    coords = {
        "cell": _coord(ds, "cell", np.arange(n_cell, dtype=np.int64)),
        "image": _coord(ds, "image", np.arange(n_img, dtype=np.int64)),
        "repeat": np.arange(n_rep, dtype=np.int64),
    }
    coords.update(_cell_labels(ds, path))
    if "blank_responses" in ds:
        out["blank_responses"] = ds["blank_responses"].transpose("cell", "blank").variable
        out = out.assign_coords({c: ds[c].variable for c in ds.coords if "blank" in ds[c].dims})
    return out.assign_coords(coords)


def _coord(ds: xr.Dataset, name: str, default: np.ndarray) -> np.ndarray:
    return np.asarray(ds[name].values) if name in ds.coords else default


def _cell_labels(ds: xr.Dataset, path) -> dict:
    """area, cre_line, ei_class, experiment_id, container_id, mouse, imaging_depth per cell."""
    n = ds.sizes["cell"]
    if "area" not in ds.coords and "area" not in ds:
        raise TableError(f"{path}: no `area` coordinate on `cell` (table.path)")
    have_cre = "cre_line" in ds.coords or "cre_line" in ds
    have_ei = "ei_class" in ds.coords or "ei_class" in ds
    if not (have_cre or have_ei):
        raise TableError(f"{path}: neither a `cre_line` nor an `ei_class` coordinate (table.path)")
    out = {"area": ("cell", _labels(ds, "area"))}
    cre = _labels(ds, "cre_line") if have_cre else np.full(n, "unknown", dtype=object)
    ei = _labels(ds, "ei_class") if have_ei else _derive_ei(cre, path)
    bad = sorted(set(ei.tolist()) - set(labels.EI_CLASSES))
    if bad:
        raise TableError(
            f"{path}: `ei_class` values {bad} (table.path); allowed: {list(labels.EI_CLASSES)}"
        )
    if have_cre and have_ei:
        _check_ei_agrees(cre, ei, path)
    out["cre_line"] = ("cell", cre)
    out["ei_class"] = ("cell", ei)
    session = "experiment_id" if "experiment_id" in ds.coords else "session_id"
    eid = _values(ds, session, np.zeros(n, dtype=np.int64))
    out["experiment_id"] = ("cell", eid)
    out["container_id"] = ("cell", _values(ds, "container_id", eid))
    have_mouse = "mouse" in ds.coords or "mouse" in ds
    mice = [labels.experiment_mouse(e) for e in eid]
    out["mouse"] = ("cell", _labels(ds, "mouse") if have_mouse else np.array(mice, dtype=object))
    out["imaging_depth"] = ("cell", _values(ds, "imaging_depth", np.full(n, -1, dtype=np.int64)))
    return out


def _labels(ds: xr.Dataset, name: str) -> np.ndarray:
    values = ds[name]
    if values.dims != ("cell",):
        raise TableError(f"`{name}` must be a coordinate along `cell`, has dims {values.dims}")
    return np.asarray(values.values, dtype=object).astype(str).astype(object)


def _values(ds: xr.Dataset, name: str, default: np.ndarray) -> np.ndarray:
    return np.asarray(ds[name].values) if name in ds.coords or name in ds else default


def _derive_ei(cre: np.ndarray, path) -> np.ndarray:
    try:
        return np.array([labels.ei_class(c) for c in cre], dtype=object)
    except labels.UnknownCreLineError as err:
        raise TableError(
            f"{path}: `cre_line`: {err}; give an `ei_class` coordinate (excitatory or "
            "inhibitory) for Cre lines outside the Visual Coding set (table.path)"
        ) from None


def _check_ei_agrees(cre: np.ndarray, ei: np.ndarray, path) -> None:
    for c, e in dict(zip(cre.tolist(), ei.tolist(), strict=True)).items():
        try:
            known = labels.ei_class(c)
        except labels.UnknownCreLineError:
            continue
        if known != e:
            raise TableError(f"{path}: cells of Cre line {c!r} are {known}, not {e!r} (ei_class)")


def check_identity(ds: xr.Dataset, path) -> None:
    """Unique cell ids, and each session id one imaging plane (one area, Cre line, depth)."""
    import pandas as pd

    cells = pd.Index(np.asarray(ds["cell"].values))
    if cells.has_duplicates:
        dup = cells[cells.duplicated()].unique()[:5].tolist()
        raise TableError(f"{path}: duplicate cell ids {dup} (coordinate `cell`)")
    images = pd.Index(np.asarray(ds["image"].values))
    if images.has_duplicates:
        dup = images[images.duplicated()].unique()[:5].tolist()
        raise TableError(f"{path}: duplicate image ids {dup} (coordinate `image`)")
    cols = ("area", "cre_line", "imaging_depth")
    plane = pd.DataFrame({c: np.asarray(ds[c].values).astype(str) for c in cols})
    plane["session"] = np.asarray(ds["experiment_id"].values)
    kinds = plane.groupby("session").nunique()
    for col in cols:
        if (kinds[col] > 1).any():
            eid = kinds.index[kinds[col] > 1][0]
            seen = sorted(set(plane.loc[plane["session"] == eid, col]))
            raise TableError(
                f"{path}: duplicate session id {eid}: its cells have {col} {seen[:4]} "
                "(coordinate `experiment_id`; one session is one imaging plane, give each its "
                "own id)"
            )


def repeat_counts(responses: xr.DataArray) -> tuple[int, int]:
    """(finite responses in all, the most finite repeats of any cell and image)."""
    finite = np.isfinite(responses)
    per = finite.sum("repeat") if "repeat" in responses.dims else finite.astype(int)
    n_finite, most = (
        int(v) for v in xr.Dataset({"a": per.sum(), "b": per.max()}).compute().values()
    )
    return n_finite, most


def validate(config: dict) -> dict:
    """Check a filled workflow config's response table and stimulus set (at planning).

    Raises TableError / StimulusError naming the file, the key and the problem; returns
    `summarize`'s dict plus ``ceiling_note`` (None, or why ceilings will be NaN)."""
    tcfg = settings(config.get("table"))
    if not tcfg["path"]:
        raise TableError("config table.path: required with source: table")
    path = Path(tcfg["path"])
    ds = normalise(open_table(path), path)
    check_identity(ds, path)
    n_finite, n_rep = repeat_counts(ds["responses"])
    if n_finite == 0:
        raise TableError(f"{path}: `responses` holds no finite value (all NaN)")
    stim = table_stimuli(tcfg, ds, path)
    check_ids(stim["image"].values, ds["image"].values, tcfg["stimuli"] or path, _stim_key(tcfg))
    note = None
    if n_rep < 2:
        note = NO_CEILING
        if tcfg["one_repeat"] == "refuse":
            raise TableError(
                f"{path}: `responses` has 1 repeat per image, so split-half reliability and "
                "noise ceilings cannot be computed (table.one_repeat: refuse); set "
                "table.one_repeat: go_on to run with NaN ceilings, or add the repeats"
            )
        for key in ("neural", "compare"):
            if (config.get(key) or {}).get("min_reliability") is not None:
                raise TableError(
                    f"{path}: 1 repeat per image, so reliability is NaN and "
                    f"{key}.min_reliability would drop every cell; set it to null"
                )
    return {**summary_of(ds, n_rep), "ceiling_note": note}


def _stim_key(tcfg: dict) -> str:
    return "table.stimuli" if tcfg["stimuli"] else "table.path: stimuli"


def table_stimuli(tcfg: dict, ds: xr.Dataset | None, path) -> xr.DataArray:
    """The stimulus set of a table: ``table.stimuli``, else the table's own `stimuli`."""
    like = ds["image"].values if ds is not None else None
    if tcfg["stimuli"]:
        return open_stimuli(tcfg["stimuli"], "table.stimuli", like)
    raw = open_store(path, "table.path")
    if not any(v in raw for v in ("stimuli", "images")):
        raise TableError(
            f"{path}: no `stimuli` variable in the table and no table.stimuli set; give the "
            "images (a folder, .npy or store) as table.stimuli"
        )
    return stimulus_array(raw, path, "table.path: stimuli")


def summary_of(ds: xr.Dataset, n_repeats: int) -> dict:
    return {
        "n_cells": int(ds.sizes["cell"]),
        "n_images": int(ds.sizes["image"]),
        "n_repeats": int(n_repeats),
        "areas": sorted(set(ds["area"].values.tolist())),
        "cre_lines": sorted(set(ds["cre_line"].values.tolist())),
    }


def summarize(path: str | Path) -> dict:
    """What a response table holds: n_cells, n_images, n_repeats (the most finite repeats of
    any cell and image), areas, cre_lines (for `m2m inspect`)."""
    ds = normalise(open_table(path), path)
    return summary_of(ds, repeat_counts(ds["responses"])[1])


def population(path: str | Path, cfg: dict | None = None) -> xr.Dataset:
    """The population store of a table: as the NWB path's (`population.population_dataset`),
    with the `neural` filters and reliability; NaN reliability (and a warning) with 1 repeat."""
    from .population import finish_population

    ds = normalise(open_table(path), path)
    check_identity(ds, path)
    one_repeat = repeat_counts(ds["responses"])[1] < 2
    if one_repeat:
        log.warning("%s: %s", path, NO_CEILING)
    pop = finish_population(ds, cfg)
    if one_repeat:  # NaN as the split would give, without empty-mean warnings
        pop["reliability"] = xr.full_like(pop["reliability"], np.nan)
    return pop


def write_population(path: str | Path, out: str | Path, cfg: dict | None = None) -> dict:
    """Write a table's population store; returns a small summary."""
    from ..io import provenance, sha256_file, write_zarr_atomic
    from .convert import settings as neural_settings

    cfg = neural_settings(cfg)
    pop = population(path, cfg)
    target = Path(path) / "zarr.json" if Path(path).is_dir() else Path(path)
    pop.attrs["provenance"] = provenance(
        config=cfg, inputs={str(path): sha256_file(target) if target.exists() else None}
    )
    pop.attrs["n_experiments"] = int(len(np.unique(pop["experiment_id"].values)))
    write_zarr_atomic(pop, out)
    return summary_of(pop, int(pop.sizes["repeat"]))


def write_stimuli(tcfg: dict, out: str | Path) -> Path:
    """The stimulus store of a table (`population.stimuli_dataset`), in the responses' image
    order."""
    from ..io import provenance, write_zarr_atomic
    from .population import stimuli_dataset

    tcfg = settings(tcfg)
    path = Path(tcfg["path"])
    ds = normalise(open_table(path), path)
    stim = table_stimuli(tcfg, ds, path)
    check_ids(stim["image"].values, ds["image"].values, tcfg["stimuli"] or path, _stim_key(tcfg))
    stim = stim.sel(image=ds["image"].values)
    source = str(tcfg["stimuli"] or path)
    out_ds = stimuli_dataset(stim.values, source, provenance(inputs={source: "stimulus set"}))
    out_ds = out_ds.assign_coords(image=ds["image"].values)
    return write_zarr_atomic(out_ds, out)
