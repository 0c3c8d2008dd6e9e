"""Neural side of the comparison, computed once: trial means, groups, ceilings, neuron maps."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import xarray as xr

from ..neural.labels import experiment_mouse
from ..neural.reliability import NO_CEILING, cell_reliability
from . import receptive_fields as rf
from . import settings
from .ceilings import group_ceilings, split_half_metrics

log = logging.getLogger("mice2machines")

CELL_COORDS = ("experiment_id", "mouse", "area", "cre_line", "ei_class", "imaging_depth")


def neural_groups(cells: pd.DataFrame, group_by, min_cells: int = 1) -> pd.DataFrame:
    """Table of neural groups: name ('all', 'area:VISp', ...), group_by, value, positions.

    One group per value of each column in `group_by`, plus 'all'; groups with fewer than
    `min_cells` cells are left out.
    """
    rows = [{"group": "all", "group_by": "all", "value": "all", "positions": np.arange(len(cells))}]
    for col in group_by:
        if col not in cells:
            raise ValueError(f"compare.groups: no cell coordinate {col!r}; have {list(cells)}")
        for value in sorted(pd.unique(cells[col].astype(str))):
            pos = np.flatnonzero(cells[col].astype(str).to_numpy() == value)
            rows.append(
                {"group": f"{col}:{value}", "group_by": col, "value": value, "positions": pos}
            )
    table = pd.DataFrame(rows)
    keep = table["positions"].map(len) >= min_cells
    return table[keep].reset_index(drop=True)


def cell_table(ds: xr.Dataset) -> pd.DataFrame:
    """The per-cell coordinates of a neural store as a DataFrame (index = position)."""
    cols = {"cell": ds["cell"].values}
    for c in CELL_COORDS:
        if c in ds.coords or c in ds:
            cols[c] = ds[c].values
    return pd.DataFrame(cols)


def prepare_neural(
    population: xr.Dataset, stimuli: xr.Dataset, cfg: dict | None = None
) -> xr.Dataset:
    """The neural store of the comparison (see compare.smk: compare_prepare)."""
    cfg = settings(cfg)
    pop, responses = _usable_cells(population, cfg["min_reliability"])
    images = _stimulus_images(stimuli, pop)
    means = _trial_means(responses)
    cells = cell_table(pop)
    groups = neural_groups(cells, cfg["groups"], int(cfg["min_cells"]))
    log.info("compare: %d cells, %d images, %d groups", len(cells), means.shape[1], len(groups))

    size = tuple(cfg["map_size"]) if cfg["map_size"] else images.shape[1:]
    F = rf.stimulus_matrix(images, size)
    maps = rf.response_maps(means, F, cfg["map_center"], cfg["map_normalize"])
    log.info("compare: neuron maps %s on a %dx%d grid", cfg["map_normalize"], *size)

    # every registered split-half metric: prepare does not depend on compare.metrics
    ceiled = split_half_metrics()
    note = no_ceiling_reason(responses)
    if note is None:
        ceiling = _ceiling_table(responses, groups, ceiled, cfg)
        reliability = _reliability(pop, responses, cfg)
        log.info("compare: split-half ceilings over %d splits", cfg["n_splits"])
    else:
        log.warning("compare: %s", note)
        ceiling = np.full((len(ceiled), len(groups)), np.nan)
        reliability = np.full(len(cells), np.nan)
    coords = _neural_coords(cells, groups, ceiled, pop["image"].values, size)
    ds = _neural_dataset(coords, means, reliability, maps, F, groups, ceiling, size, cfg)
    ds = ds.assign(rdm_crossnobis=_crossnobis(responses, groups, cfg))
    ds = ds.merge(inter_animal_variables(means, cells, groups, cfg))
    if note is not None:
        ds.attrs["ceiling_note"] = note
    return ds


def no_ceiling_reason(responses: np.ndarray) -> str | None:
    """Why split-half ceilings cannot be computed (None when they can): every cell and image
    has fewer than 2 finite repeats."""
    if responses.ndim == 3 and (np.isfinite(responses).sum(-1) >= 2).any():
        return None
    return NO_CEILING


def cell_mice(cells: pd.DataFrame) -> np.ndarray | None:
    """Each cell's mouse: the `mouse` coordinate, else one mouse per experiment (None when
    there is neither)."""
    if "mouse" in cells:
        return cells["mouse"].astype(str).to_numpy()
    if "experiment_id" in cells:
        return np.array([experiment_mouse(e) for e in cells["experiment_id"]])
    return None


def inter_animal_variables(
    means, cells: pd.DataFrame, groups: pd.DataFrame, cfg: dict
) -> xr.Dataset:
    """``ceiling_inter_animal``, ``inter_animal_n_mice`` and ``inter_animal_reason`` (mapping,
    group): the inter-animal ceiling of every mapping metric (`interanimal.MAPPINGS`), with
    the metric's folds, penalties and score; NaN, with the reason, where there is none."""
    from .crossval import kfold
    from .interanimal import MAPPINGS, inter_animal_ceilings

    names, G = list(MAPPINGS), len(groups)
    ceiling = np.full((len(names), G), np.nan)
    n_mice = np.zeros((len(names), G), dtype=np.int64)
    reason = np.full((len(names), G), "compare.inter_animal is off", dtype=object)
    mice = cell_mice(cells)
    if cfg["inter_animal"] and mice is None:
        reason[:] = "no mouse or experiment_id coordinate"
    elif cfg["inter_animal"]:
        folds = kfold(means.shape[1], int(cfg["n_folds"]), int(cfg["seed"]))
        positions = dict(zip(groups["group"], groups["positions"], strict=True))
        for i, name in enumerate(names):
            out = inter_animal_ceilings(
                means,
                mice,
                positions,
                MAPPINGS[name](cfg),
                folds,
                int(cfg["inter_animal_min_cells"]),
            )
            ceiling[i], n_mice[i], reason[i] = out["ceiling"], out["n_mice"], out["reason"]
        log.info("compare: inter-animal ceilings of %s, %d mice", names, len(set(mice)))
    dims = ("mapping", "group")
    data = {
        "ceiling_inter_animal": (dims, ceiling),  # long_name, units: io.VARIABLE_ATTRS
        "inter_animal_n_mice": (dims, n_mice, {"long_name": "mice held out", "units": "1"}),
        "inter_animal_reason": (
            dims,
            reason,
            {"long_name": "why there is no inter-animal ceiling"},
        ),
    }
    coords = {
        "mapping": np.array(names, dtype=str),
        "group": groups["group"].to_numpy().astype(str),
    }
    return xr.Dataset(data, coords=coords)


def _crossnobis(responses, groups: pd.DataFrame, cfg: dict):
    """(group, image, image_b) crossnobis RDMs of the groups over partitions of the repeats
    (the rsa_crossnobis_* metrics; NaN where there are fewer than 2 repeats)."""
    from .rdm_methods import group_crossnobis

    n, reps = responses.shape[1], responses.shape[-1]
    if reps < 2:
        rdms = np.full((len(groups), n, n), np.nan)
    else:
        k = min(int(cfg["rsa_crossnobis_partitions"]), reps)
        rdms = group_crossnobis(
            responses, list(groups["positions"]), k, cfg["rsa_crossnobis_noise"]
        )
    attrs = {
        "long_name": "crossnobis RDM over partitions of the repeats",
        "partitions": int(cfg["rsa_crossnobis_partitions"]),
        "noise": cfg["rsa_crossnobis_noise"],
    }
    return (("group", "image", "image_b"), rdms, attrs)


def _usable_cells(population: xr.Dataset, min_reliability=None) -> tuple[xr.Dataset, np.ndarray]:
    """The cells kept for the comparison and their responses (cell, image, repeat) float32.

    Cells below ``min_reliability`` (where the store has a reliability) are left out, and so,
    with a warning, are those without usable responses: fewer than 3 finite trial means, or
    all of them equal."""
    pop = population
    if min_reliability is not None and "reliability" in pop:
        keep = (pop["reliability"] >= min_reliability).values
        pop = pop.isel(cell=np.flatnonzero(keep))
    responses = np.asarray(pop["responses"].values, dtype=np.float32)  # (cell, image, repeat)
    with np.errstate(invalid="ignore"):
        flat = rf.trial_average(responses)
        usable = np.isfinite(flat).sum(1) >= 3
        usable &= np.nanstd(np.where(np.isfinite(flat), flat, np.nan), axis=1) > 0
    if not usable.all():
        log.warning(
            "compare: dropping %d cells without usable responses (all NaN or constant)",
            int((~usable).sum()),
        )
        pop = pop.isel(cell=np.flatnonzero(usable))
        responses = responses[usable]
    if pop.sizes["cell"] == 0:
        raise ValueError("compare: no cells left (check compare.min_reliability)")
    return pop, responses


def _stimulus_images(stimuli: xr.Dataset, pop: xr.Dataset) -> np.ndarray:
    """The stimulus images (image, y, x) float64, in the order of the population's images."""
    images = stimuli["images"]
    if "image" in images.coords and "image" in pop.coords:
        images = images.sel(image=pop["image"].values)
    return np.asarray(images.values, dtype=np.float64)


def _trial_means(responses: np.ndarray) -> np.ndarray:
    """Trial-averaged responses (cell, image); a cell's missing means are its mean over images."""
    means = rf.trial_average(responses)
    return np.where(np.isfinite(means), means, np.nanmean(means, 1, keepdims=True))


def _ceiling_table(responses, groups: pd.DataFrame, metrics, cfg: dict) -> np.ndarray:
    """Split-half noise ceilings (metric, group) of the metrics that have one."""
    positions = dict(zip(groups["group"], groups["positions"], strict=True))
    ceil = group_ceilings(
        responses,
        positions,
        int(cfg["n_splits"]),
        int(cfg["seed"]),
        metrics=metrics,
        remove_mean_pattern=bool(cfg["rsa_remove_mean_pattern"]),
        crossnobis=(int(cfg["rsa_crossnobis_partitions"]), cfg["rsa_crossnobis_noise"]),
    )
    values = np.array([ceil[m] for m in metrics], dtype=np.float64)
    return values.reshape(len(metrics), len(groups))


def _reliability(pop: xr.Dataset, responses: np.ndarray, cfg: dict) -> np.ndarray:
    """Each cell's split-half reliability: the store's, or computed from its responses."""
    if "reliability" in pop:
        return np.asarray(pop["reliability"].values, dtype=np.float64)
    return cell_reliability(responses, int(cfg["n_splits"]), int(cfg["seed"]))


def _neural_coords(cells: pd.DataFrame, groups: pd.DataFrame, metrics, image_ids, size):
    """Coordinates of the neural store: cells (with their per-cell coordinates), images,
    groups, ceiled metrics and the map grid."""
    coords = {"cell": cells["cell"].to_numpy()}
    for c in CELL_COORDS:
        if c in cells:
            v = cells[c].to_numpy()
            coords[c] = ("cell", v.astype(str) if v.dtype == object else v)
    coords.update(
        {
            "image": np.asarray(image_ids),
            "group": groups["group"].to_numpy().astype(str),
            "group_by": ("group", groups["group_by"].to_numpy().astype(str)),
            "group_value": ("group", groups["value"].to_numpy().astype(str)),
            "metric": metrics,
            "y_map": np.arange(size[0]),
            "x_map": np.arange(size[1]),
        }
    )
    return coords


def _neural_dataset(coords, means, reliability, maps, F, groups, ceiling, size, cfg) -> xr.Dataset:
    """The neural store from its parts (see prepare_neural)."""
    n_cells = len(coords["cell"])
    membership = np.zeros((len(groups), n_cells), dtype=bool)
    for i, pos in enumerate(groups["positions"]):
        membership[i, pos] = True
    map_attrs = {
        "long_name": "receptive-field map N = T'F_S",
        "center": int(bool(cfg["map_center"])),
        "normalize": cfg["map_normalize"],
    }
    data = {
        "responses": (
            ("cell", "image"),
            means.astype(np.float32),
            {"long_name": "trial-averaged response"},
        ),
        "reliability": (
            ("cell",),
            reliability.astype(np.float32),
            {"long_name": "split-half reliability (Spearman-Brown)"},
        ),
        "maps": (
            ("cell", "y_map", "x_map"),
            maps.reshape(n_cells, *size).astype(np.float32),
            map_attrs,
        ),
        "stimulus_matrix": (
            ("image", "y_map", "x_map"),
            F.reshape(len(F), *size).astype(np.float32),
            {"long_name": "F_S: resized stimuli, 0..1"},
        ),
        "membership": (("group", "cell"), membership),
        "ceiling": (
            ("metric", "group"),
            ceiling,
            {"long_name": "split-half noise ceiling (Spearman-Brown)"},
        ),
    }
    return xr.Dataset(data, coords=coords)


def read_selected(path, neural: xr.Dataset) -> np.ndarray:
    """Positions (in the neural store) of the selected cells of a selection table."""
    table = pd.read_csv(path, sep="\t")
    chosen = table.loc[table["selected"].astype(bool), "cell"].to_numpy()
    index = pd.Index(neural["cell"].values)
    pos = index.get_indexer(chosen)
    if (pos < 0).any():
        raise ValueError(f"{path}: {int((pos < 0).sum())} selected cells are not in the store")
    return np.sort(pos)


def input_hashes(inputs) -> dict:
    """sha256 of each input file, or of a zarr store's root zarr.json (for provenance)."""
    from pathlib import Path

    from ..io import sha256_file

    items = inputs.items() if hasattr(inputs, "items") else enumerate(inputs)
    out = {}
    for _, p in items:
        for path in [p] if isinstance(p, str) else list(p):
            path = Path(path)
            target = path / "zarr.json" if path.is_dir() else path
            out[str(path)] = sha256_file(target) if target.exists() else None
    return out
