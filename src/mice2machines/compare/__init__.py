"""Model-versus-brain comparison: neural preparation, per-model job, aggregation, figures.

Stages (one Snakemake rule each, see workflow/rules/compare.smk):

1. ``prepare.prepare_neural``: trial means, neural groups, ceilings, neuron maps.
2. ``selection.select_neurons`` (package module): the paper's neuron selection.
3. ``job.compare_model``: stream every layer of one model's activation store once and compute
   every metric against every neural group; one labelled store per model.
4. ``aggregate.aggregate``: all models into one store (dask) and a tidy long CSV.
5. ``figures``: heatmaps, best layer per area, E vs I, the paper's RMSE distributions.
"""

from __future__ import annotations

import copy

from .registry import METRICS
from .selection import DEFAULTS as SELECTION_DEFAULTS

DEFAULTS: dict = {
    "models": None,
    "metrics": list(METRICS),  # every registered metric, in registry order
    "rsa_remove_mean_pattern": True,
    "groups": ["area", "cre_line", "ei_class"],
    "min_cells": 5,
    "min_reliability": None,
    "cell_metrics_on": "selected",
    "map_size": [32, 40],
    "map_center": True,
    "map_normalize": "zscore",
    "neurn": {"kernel_size": 5, "max_over": "image", "padding": "reflect"},
    # the selection module's own defaults; its seed is the section-wide `seed`
    "selection": {k: v for k, v in SELECTION_DEFAULTS.items() if k != "seed"},
    "n_folds": 5,
    "ridge_alphas": [1e-2, 1e-1, 1.0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6],
    "n_splits": 10,
    "n_boot": 1000,
    "ci_level": 0.95,
    "seed": 0,
    "unit_chunk": 65536,
    "device": "auto",
    "dtype": "float32",
    "gpu": 0,
}


def settings(cfg: dict | None) -> dict:
    """The `compare` config section with defaults filled in (nested dicts merged)."""
    out = copy.deepcopy(DEFAULTS)
    for k, v in (cfg or {}).items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k].update(v)
        else:
            out[k] = v
    return out
