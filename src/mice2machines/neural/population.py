"""The stores every comparison reads: the population (all experiments' responses, one
reliability per cell, filtered by the `neural` config) and the stimuli (the template images).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import xarray as xr

from ..io import concat_stores, open_zarr, provenance, write_zarr_atomic
from .convert import settings
from .nwb import Session
from .reliability import split_half_reliability

log = logging.getLogger("mice2machines")


def stimuli_dataset(template: np.ndarray, source: str, prov: str) -> xr.Dataset:
    """The stimulus store: `images` (image, y, x) float32 on the 0-255 template scale."""
    n, h, w = template.shape
    ds = xr.Dataset(
        {"images": (("image", "y", "x"), template.astype(np.float32), {"units": "gray level"})},
        coords={"image": np.arange(n, dtype=np.int64)},
        attrs={"source": source, "height": h, "width": w, "provenance": prov},
    )
    return ds


def population_dataset(paths: Sequence[str | Path], cfg: dict | None = None) -> xr.Dataset:
    """All experiments' responses concatenated along `cell` (lazy), with reliability.

    Filters (areas, cre_lines, min_reliability) come from the `neural` config section.
    """
    parts = [open_zarr(p)[["responses", "blank_responses"]] for p in paths]
    pop = concat_stores(parts, "cell", coords="different", compat="equals", combine_attrs="drop")
    return finish_population(pop, cfg)


def finish_population(pop: xr.Dataset, cfg: dict | None = None) -> xr.Dataset:
    """The `neural` filters (areas, cre_lines, min_reliability) and the reliability column of
    a population (cell, image, repeat), rechunked along `cell` for writing."""
    cfg = settings(cfg)
    if cfg["areas"]:
        pop = pop.isel(cell=np.isin(pop.area.values, cfg["areas"]))
    if cfg["cre_lines"]:
        pop = pop.isel(cell=np.isin(pop.cre_line.values, cfg["cre_lines"]))
    pop["reliability"] = split_half_reliability(
        pop.responses, cfg["reliability_split"], cfg["reliability_seed"]
    )
    if cfg["min_reliability"] is not None:
        keep = (pop.reliability >= cfg["min_reliability"]).compute().values
        pop = pop.isel(cell=np.flatnonzero(keep))
    pop = pop.chunk({"cell": max(int(cfg["cell_block"]), 256)})
    for v in pop.variables.values():
        v.encoding.clear()
    return pop


def write_stimuli(session: Session, out: str | Path) -> Path:
    """The stimulus store from a session's template stack."""
    prov = provenance(inputs={str(session.path): f"template of experiment {session.experiment_id}"})
    ds = stimuli_dataset(session.template(), str(session.path), prov)
    return write_zarr_atomic(ds, out)


def write_population(paths: Sequence[str | Path], out: str | Path, cfg: dict | None = None) -> dict:
    """Assemble and write the population store with dask; returns a small summary."""
    cfg = settings(cfg)
    pop = population_dataset(paths, cfg)
    pop.attrs["provenance"] = provenance(config=cfg, inputs={str(p): "zarr" for p in paths})
    pop.attrs["n_experiments"] = len(paths)
    write_zarr_atomic(pop, out)
    counts = {
        "cells": int(pop.sizes["cell"]),
        "areas": sorted(set(pop.area.values.tolist())),
        "cre_lines": sorted(set(pop.cre_line.values.tolist())),
    }
    log.info("population: %s", counts)
    return counts
