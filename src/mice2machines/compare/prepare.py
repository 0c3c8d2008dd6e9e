"""Neural side of the comparison, computed once: trial means, groups, ceilings, neuron maps."""

from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import xarray as xr

from ..neural.labels import experiment_mouse
from ..neural.reliability import NO_CEILING
from . import receptive_fields as rf
from . import settings
from .ceilings import SplitHalfSums, split_half_metrics

if TYPE_CHECKING:
    from .rdm_methods import GroupCrossnobis

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
    """The neural store of the comparison (see compare.smk: compare_prepare).

    The responses are read ``compare.cell_block`` cells at a time (`_stream_blocks`): memory
    O(block x images x repeats) for the repeats, plus O(cells x (images + map pixels)) for the
    trial means and maps, plus O(groups x splits x images^2) for the split-half sums."""
    cfg = settings(cfg)
    pop = _reliable_cells(population, cfg["min_reliability"])
    F, size = _stimulus_matrix(stimuli, pop, cfg["map_size"])
    candidates = neural_groups(cell_table(pop), cfg["groups"])
    blocks = _stream_blocks(pop, F, candidates, cfg)
    if not blocks.keep.all():
        log.warning(
            "compare: dropping %d cells without usable responses (all NaN or constant)",
            int((~blocks.keep).sum()),
        )
        pop = pop.isel(cell=np.flatnonzero(blocks.keep))
    if pop.sizes["cell"] == 0:
        raise ValueError("compare: no cells left (check compare.min_reliability)")
    means = np.concatenate(blocks.means)
    cells = cell_table(pop)
    groups = neural_groups(cells, cfg["groups"], int(cfg["min_cells"]))
    which = pd.Index(candidates["group"]).get_indexer(groups["group"])
    log.info("compare: %d cells, %d images, %d groups", len(cells), means.shape[1], len(groups))
    log.info("compare: neuron maps %s on a %dx%d grid", cfg["map_normalize"], *size)

    # every registered split-half metric: prepare does not depend on compare.metrics
    ceiled = split_half_metrics()
    note = None if blocks.two_repeats else NO_CEILING
    if note is None:
        names = list(groups["group"])
        rmp = bool(cfg["rsa_remove_mean_pattern"])
        ceil = blocks.split_halves.ceilings(names, which, ceiled, rmp)
        ceiling = np.array([ceil[m] for m in ceiled], dtype=np.float64)
        ceiling = ceiling.reshape(len(ceiled), len(groups))
        if "reliability" in pop:
            reliability = np.asarray(pop["reliability"].values, dtype=np.float64)
        else:
            reliability = blocks.split_halves.reliability()
        log.info("compare: split-half ceilings over %d splits", cfg["n_splits"])
    else:
        log.warning("compare: %s", note)
        ceiling = np.full((len(ceiled), len(groups)), np.nan)
        reliability = np.full(len(cells), np.nan)
    coords = _neural_coords(cells, groups, ceiled, pop["image"].values, size)
    maps = np.concatenate(blocks.maps)
    ds = _neural_dataset(coords, means, reliability, maps, F, groups, ceiling, size, cfg)
    ds = ds.assign(rdm_crossnobis=_crossnobis(blocks.crossnobis, which, means.shape[1], cfg))
    ds = ds.merge(inter_animal_variables(means, cells, groups, cfg))
    if note is not None:
        ds.attrs["ceiling_note"] = note
    return ds


@dataclasses.dataclass
class Blocks:
    """What `_stream_blocks` gathered: per block the usable cells' trial means (float64) and
    maps (float32); which cells are usable; whether some cell and image have 2 finite
    repeats; the candidate groups' split-half and crossnobis sums (None without repeats)."""

    keep: np.ndarray
    means: list
    maps: list
    two_repeats: bool
    split_halves: SplitHalfSums | None
    crossnobis: GroupCrossnobis | None


def _stream_blocks(pop: xr.Dataset, F: np.ndarray, candidates: pd.DataFrame, cfg: dict):
    """One pass over the responses, ``compare.cell_block`` cells at a time: each block's
    usable cells (at least 3 finite trial means, not all equal), their trial means and maps,
    and the sums of every candidate group's split halves and crossnobis RDMs."""
    from .rdm_methods import GroupCrossnobis

    da = pop["responses"]
    if da.dims != ("cell", "image", "repeat"):
        raise ValueError(
            f"compare: population responses must be (cell, image, repeat), not {da.dims}"
        )
    n, n_img, reps = da.shape
    member = np.zeros((len(candidates), n), dtype=bool)
    for g, pos in enumerate(candidates["positions"]):
        member[g, pos] = True
    k = min(int(cfg["rsa_crossnobis_partitions"]), reps)
    crossnobis = (int(cfg["rsa_crossnobis_partitions"]), cfg["rsa_crossnobis_noise"])
    out = Blocks(np.zeros(n, dtype=bool), [], [], False, None, None)
    if reps >= 2:
        out.split_halves = SplitHalfSums(
            len(candidates), n_img, reps, int(cfg["n_splits"]), int(cfg["seed"]), crossnobis
        )
        out.crossnobis = GroupCrossnobis(len(candidates), n_img, k, crossnobis[1])
    step = int(cfg["cell_block"])
    for lo in range(0, n, step):
        hi = min(lo + step, n)
        R = np.asarray(da.isel(cell=slice(lo, hi)).values, dtype=np.float32)
        with np.errstate(invalid="ignore"):
            flat = rf.trial_average(R)
            usable = np.isfinite(flat).sum(1) >= 3
            usable &= np.nanstd(np.where(np.isfinite(flat), flat, np.nan), axis=1) > 0
        R, flat = R[usable], flat[usable]
        out.keep[lo:hi] = usable
        means = np.where(np.isfinite(flat), flat, np.nanmean(flat, 1, keepdims=True))
        out.means.append(means)
        maps = rf.response_maps(means, F, cfg["map_center"], cfg["map_normalize"])
        out.maps.append(maps.astype(np.float32))
        out.two_repeats |= no_ceiling_reason(R) is None
        members = [np.flatnonzero(m) for m in member[:, lo:hi][:, usable]]
        if out.split_halves is not None:
            out.split_halves.update(R, members)
            out.crossnobis.update(R, members)
        log.info("compare: cells %d-%d of %d read (%d usable)", lo, hi, n, int(usable.sum()))
    return out


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


def _crossnobis(acc, which, n: int, cfg: dict):
    """(group, image, image_b) crossnobis RDMs of the groups (candidates ``which``) over
    partitions of the repeats (the rsa_crossnobis_* metrics; NaN where there are fewer than 2
    repeats)."""
    rdms = np.full((len(which), n, n), np.nan) if acc is None else acc.rdms(which)
    attrs = {
        "long_name": "crossnobis RDM over partitions of the repeats",
        "partitions": int(cfg["rsa_crossnobis_partitions"]),
        "noise": cfg["rsa_crossnobis_noise"],
    }
    return (("group", "image", "image_b"), rdms, attrs)


def _reliable_cells(population: xr.Dataset, min_reliability=None) -> xr.Dataset:
    """The cells at or above ``min_reliability`` (where the store has a reliability); the
    responses stay lazy (`_stream_blocks` drops the cells without usable responses)."""
    if min_reliability is not None and "reliability" in population:
        keep = (population["reliability"] >= min_reliability).values
        return population.isel(cell=np.flatnonzero(keep))
    return population


#: images resized at a time (the Allen stimuli are 118 x 918 x 1174: 1 GB in float64)
IMAGE_BLOCK = 8


def _stimulus_matrix(stimuli: xr.Dataset, pop: xr.Dataset, map_size) -> tuple[np.ndarray, tuple]:
    """F_S (image, pixels) of the stimuli, in the order of the population's images, and the
    map grid (``map_size``, else the stimulus size); read and resized a few images at a time."""
    images = stimuli["images"]
    if "image" in images.coords and "image" in pop.coords:
        images = images.sel(image=pop["image"].values)
    size = tuple(map_size) if map_size else tuple(images.shape[1:])
    parts = [
        rf.stimulus_matrix(np.asarray(images[lo : lo + IMAGE_BLOCK].values, np.float64), size)
        for lo in range(0, len(images), IMAGE_BLOCK)
    ]
    return np.concatenate(parts), size


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
            maps.reshape(n_cells, *size).astype(np.float32, copy=False),
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
