"""The metric registry: what every stage of the comparison knows about a metric.

A metric is one module in `mice2machines.compare.metrics` (or a user's plugin module, config
key ``compare.plugins``) that calls `register_metric`. prepare, the per-model job, the
aggregation, the figures and the config schema's allowed values all read this registry.

Two kinds:

- ``representation``: ``score(neural, model)`` compares two sets of `Representations`
  (Gram matrices and RDMs of the same stimuli) and returns a (groups, layers) matrix.
  ``bootstrap(neural, model, indices, device)`` gives (n_boot, groups, layers) scores of the
  resamples ``indices`` (n_boot, stimuli), vectorised in blocks on ``device`` (default: each
  resample's Gram matrices and RDMs, indexed by its row, rescored). With ``ceiling="split_half"`` its noise ceiling is
  its own score between two halves of the repeats, stepped up by Spearman-Brown.
  ``null(neural, model, perms, device)`` gives (n_perm, groups, layers) scores with the image
  labels of the neural side permuted (default: each permutation rescored).
- ``cell``: ``layer(ctx)`` makes a scorer that streams one layer's chunks of units
  (``update(block)``) and returns per-cell variables (``result(layer)``, see `CellScorer`);
  ``cell_var`` names the per-cell score, summarised per group by its median. ``ceiling:
  "reliability"`` uses the group median of the cells' split-half reliability;
  ``bootstrap="images"`` resamples stimuli of the held-out predictions, ``"cells"`` the cells.
  The scorer's result also holds ``null`` (n_perm, cells): the score under the job's
  permutations of the image labels (``ctx.perms[metric.null_perms]``), over the same units.

``default=False`` keeps a metric out of the default metric list (it is still an allowed
value); ``per_model=True`` marks a representation metric that scores a model as a whole
(RSR: all layers at once): its (groups, layers) score holds the model's score in every
layer column, so that it fits the stores, p, and BH q (replicating every test L times
leaves BH's q unchanged) with no per-layer meaning.

Every metric's permutations come from the config key its ``null_perms`` names (``n_perm``, or
``n_perm_max`` for the costly max-over-units metrics); the rows are the same for every layer
and model of a run.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import pkgutil
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

KINDS = ("representation", "cell")
CEILINGS = ("split_half", "reliability", None)
#: the config keys that set how many permutations a metric's null uses
NULL_COUNTS = ("n_perm", "n_perm_max")


@dataclasses.dataclass(frozen=True)
class Variable:
    """A per-cell variable a cell metric stores: its dims after (layer, ...), fill value."""

    dims: tuple[str, ...] = ("cell",)
    fill: float | int = np.nan
    dtype: str = "float64"
    coords: Mapping[str, Sequence] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class JobContext:
    """What a cell metric's scorer may use: the job's cells and settings.

    Y: (images, cells) trial-averaged responses of the job's cells; folds: the shared
    cross-validation folds over images; selected: (cells,) which cells are the selected
    neurons (the paper's receptive-field analysis); maps: (selected, pixels) their neuron maps;
    stimulus_matrix: (images, pixels) F_S; cfg: the compare settings; perms: the run's
    permutations of the image labels, by the config key that sets their count.
    """

    Y: np.ndarray
    folds: list
    selected: np.ndarray
    maps: np.ndarray
    stimulus_matrix: np.ndarray
    device: str
    dtype: np.dtype
    cfg: Mapping
    perms: Mapping[str, np.ndarray] = dataclasses.field(default_factory=dict)
    cache: dict = dataclasses.field(default_factory=dict)  # what scorers share across layers

    @property
    def n_images(self) -> int:
        return self.Y.shape[0]

    @property
    def n_cells(self) -> int:
        return self.Y.shape[1]

    def fold_scores(self, prediction: np.ndarray, Y: np.ndarray) -> np.ndarray:
        """(cells,) cross-validated score of held-out predictions (n, cells), as
        compare.cv_score says: the mean over folds of r (chance 0), of Fisher z, or the
        pooled r (biased below 0 without signal)."""
        from .crossval import fold_scores, pooled_scores

        how = self.cfg["cv_score"]
        if how == "pooled":
            return pooled_scores(prediction, Y)
        return fold_scores(prediction, Y, self.folds, fisher=how == "fold_mean_z")[0]


class CellScorer(Protocol):
    """One layer of a cell metric: fed the layer's chunks, then asked for per-cell results."""

    def update(self, block: np.ndarray) -> None:
        """A (images, channels, y, x) or (images, units) chunk of the layer's units."""

    def result(self, layer) -> dict[str, np.ndarray]:
        """Per-cell variables (their trailing axis = the job's cells), and optionally
        ``prediction`` (cells, images): held-out predictions for the image bootstrap, and
        ``null`` (n_perm, cells) of the cell score under the permutations.
        ``layer`` has ``gram`` and ``rdm`` (the layer's statistics over all units)."""


@dataclasses.dataclass(frozen=True)
class Metric:
    """A named comparison metric (see the module docstring for the two kinds)."""

    name: str
    kind: str
    higher_is_better: bool
    description: str
    score: Callable | None = None
    bootstrap: Callable | None = None
    layer: Callable | None = None
    cell_var: str | None = None
    variables: Mapping[str, Variable] = dataclasses.field(default_factory=dict)
    unit_var: str | None = None
    ceiling: str | None = None
    cell_bootstrap: str = "cells"
    null: Callable | None = None
    null_perms: str = "n_perm"
    default: bool = True
    per_model: bool = False

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"metric {self.name!r}: unknown kind {self.kind!r}; known: {KINDS}")
        if self.ceiling not in CEILINGS:
            raise ValueError(f"metric {self.name!r}: unknown ceiling rule {self.ceiling!r}")
        if self.kind == "representation" and self.score is None:
            raise ValueError(f"representation metric {self.name!r} needs a score function")
        if self.kind == "cell" and (self.layer is None or self.cell_var not in self.variables):
            raise ValueError(f"cell metric {self.name!r} needs layer and cell_var in variables")
        if self.cell_bootstrap not in ("cells", "images"):
            raise ValueError(f"metric {self.name!r}: cell_bootstrap is 'cells' or 'images'")
        if self.null_perms not in NULL_COUNTS:
            raise ValueError(f"metric {self.name!r}: null_perms is one of {NULL_COUNTS}")
        if self.per_model and self.kind != "representation":
            raise ValueError(f"metric {self.name!r}: only representation metrics are per_model")

    @property
    def stat_variables(self) -> dict[str, Variable]:
        """Per-cell significance a cell metric adds: p and BH q (over layers x cells)."""
        if self.kind != "cell":
            return {}
        return {f"{self.name}_p": Variable(), f"{self.name}_q": Variable()}


METRICS: dict[str, Metric] = {}


def register_metric(metric: Metric) -> Metric:
    """Add a metric to the registry (the name and its variables must be new)."""
    if metric.name in METRICS:
        raise ValueError(f"metric {metric.name!r} is already registered")
    taken = {v for m in METRICS.values() for v in m.variables}
    clash = taken & set(metric.variables)
    if clash:
        raise ValueError(f"metric {metric.name!r}: variables {sorted(clash)} already exist")
    METRICS[metric.name] = metric
    return metric


def get_metric(name: str) -> Metric:
    """A registered metric by name."""
    try:
        return METRICS[name]
    except KeyError:
        raise ValueError(f"unknown metric {name!r}; known: {sorted(METRICS)}") from None


def cell_variables() -> dict[str, Variable]:
    """Every per-cell variable of the registered cell metrics, significance included."""
    return {k: v for m in METRICS.values() for k, v in {**m.variables, **m.stat_variables}.items()}


def load_plugins(plugins: Sequence[str] = ()) -> None:
    """Import plugin modules (dotted names or .py paths) that register metrics."""
    for item in plugins or ():
        if item.endswith(".py"):
            path = Path(item).resolve()
            name = f"m2m_plugin_{path.stem}"
            if name in sys.modules:
                continue
            spec = importlib.util.spec_from_file_location(name, path)
            if spec is None or not path.exists():
                raise FileNotFoundError(f"compare.plugins: no module file {path}")
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
        else:
            importlib.import_module(item)


def _load_builtin() -> None:
    """Import every module of `compare.metrics`; their metrics are ordered by each module's
    ``ORDER`` (the order of the default metric list, the stores and the figures)."""
    from . import metrics

    rank = {}
    for info in pkgutil.iter_modules(metrics.__path__):
        before = set(METRICS)
        module = importlib.import_module(f"{metrics.__name__}.{info.name}")
        for name in METRICS.keys() - before:
            rank[name] = getattr(module, "ORDER", 99)
    ordered = sorted(METRICS, key=lambda n: (rank.get(n, 99), list(METRICS).index(n)))
    items = [(n, METRICS[n]) for n in ordered]
    METRICS.clear()
    METRICS.update(items)


_load_builtin()
