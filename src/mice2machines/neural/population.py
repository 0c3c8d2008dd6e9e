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

#: the arrays of the experiment stores the population reads (not their trials)
READS = ("responses", "blank_responses")


def stimuli_dataset(template: np.ndarray, source: str, prov: str) -> xr.Dataset:
    """The stimulus store: `images` (image, y, x) float32 on the 0-255 template scale."""
    n, h, w = template.shape
    ds = xr.Dataset(
        {"images": (("image", "y", "x"), template.astype(np.float32), {"units": "gray level"})},
        coords={"image": np.arange(n, dtype=np.int64)},
        attrs={"source": source, "height": h, "width": w, "provenance": prov},
    )
    return ds


class DuplicateCellsError(ValueError):
    """The same cell (cell specimen id) or experiment in more than one experiment store."""


def check_unique_cells(parts: Sequence[xr.Dataset], paths: Sequence[str | Path]) -> None:
    """Refuse experiment stores that share an experiment id or a cell specimen id.

    Each cell is counted once: a session stored under two ids, or a cell in two natural-scenes
    sessions, would otherwise be counted twice. Raises `DuplicateCellsError` naming the stores.
    """
    owner_cell: dict[int, int] = {}
    owner_exp: dict[int, int] = {}
    clashes: dict[tuple[int, int], list[int]] = {}
    for i, ds in enumerate(parts):
        cells = np.asarray(ds["cell"].values, dtype=np.int64)
        if len(np.unique(cells)) < len(cells):
            values, counts = np.unique(cells, return_counts=True)
            raise DuplicateCellsError(
                f"{paths[i]}: cell specimen ids repeated within the store: "
                f"{values[counts > 1][:5].tolist()}"
            )
        for eid in np.unique(np.asarray(ds["experiment_id"].values, dtype=np.int64)).tolist():
            if eid in owner_exp:
                raise DuplicateCellsError(
                    f"experiment {eid} is in two stores: {paths[owner_exp[eid]]} and {paths[i]}"
                )
            owner_exp[eid] = i
        for cell in cells.tolist():
            j = owner_cell.setdefault(cell, i)
            if j != i:
                clashes.setdefault((j, i), []).append(cell)
    if clashes:
        lines = [
            f"{paths[j]} and {paths[i]}: {len(ids)} cells, e.g. {ids[:5]}"
            for (j, i), ids in sorted(clashes.items())
        ]
        raise DuplicateCellsError(
            "cell specimen ids in more than one experiment store (each cell is counted once; "
            "the same session under two ids?): " + "; ".join(lines)
        )


def population_dataset(paths: Sequence[str | Path], cfg: dict | None = None) -> xr.Dataset:
    """All experiments' responses concatenated along `cell` (lazy), with reliability.

    Filters (areas, cre_lines, min_reliability) come from the `neural` config section. Stores
    sharing a cell or an experiment are refused (`check_unique_cells`).
    """
    parts = [open_zarr(p)[list(READS)] for p in paths]
    check_unique_cells(parts, paths)
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
