"""The similarity engine in one namespace: RDMs, RSA, CKA, ridge, matching, ceilings.

The code lives in `mice2machines.compare` (one module per concern); this module gathers the
public functions for users and notebooks:

- ``rdm(X)``: (stimuli, features) -> square 1 - Pearson dissimilarity matrix.
- ``rsa(rdm_a, rdm_b, method="spearman")``: compare RDMs on their upper triangle.
- ``rdm_euclidean``, ``rdm_crossnobis``, ``compare_rdms(a, b, comparator)``: rsatoolbox's
  other distances and comparators (``DISTANCES``, ``COMPARATORS``); ``rsr_fit``: RSR.
- ``cka(X, Y, unbiased=True)``: linear CKA; unbiased HSIC (Song et al. 2012) by default.
- ``ridge_predictivity``, ``match_units``: per-neuron held-out correlations.
"""

from .compare.bootstrap import (
    bootstrap_cell_r,
    bootstrap_indices,
    bootstrap_representation,
    percentile_ci,
)
from .compare.ceilings import group_ceilings
from .compare.cka import centre_gram, cka, cka_from_grams, hsic, u_centre_gram
from .compare.crossval import kfold
from .compare.gram import GramAccumulator, Representations, gram_stats, rdm_from_gram, rsa_table
from .compare.matching import MatchAccumulator, match_units
from .compare.rdm_methods import (
    COMPARATORS,
    DISTANCES,
    compare_rdms,
    rdm_crossnobis,
    rdm_euclidean,
)
from .compare.registry import METRICS, Metric, get_metric, register_metric
from .compare.ridge import ridge_cv, ridge_predictivity
from .compare.rsa import RDM_COMPARATORS, rdm, rsa, square, upper_tri
from .compare.rsr import rsr_fit
from .devices import cpu_workers, resolve_device
from .neural.reliability import cell_reliability, pearson_rows, spearman_brown, split_halves

__all__ = [
    "COMPARATORS",
    "DISTANCES",
    "compare_rdms",
    "rdm_crossnobis",
    "rdm_euclidean",
    "rsr_fit",
    "METRICS",
    "RDM_COMPARATORS",
    "GramAccumulator",
    "MatchAccumulator",
    "Metric",
    "Representations",
    "bootstrap_cell_r",
    "bootstrap_indices",
    "bootstrap_representation",
    "cell_reliability",
    "centre_gram",
    "cka",
    "cka_from_grams",
    "cpu_workers",
    "get_metric",
    "gram_stats",
    "group_ceilings",
    "hsic",
    "kfold",
    "match_units",
    "pearson_rows",
    "percentile_ci",
    "rdm",
    "rdm_from_gram",
    "register_metric",
    "resolve_device",
    "ridge_cv",
    "ridge_predictivity",
    "rsa",
    "rsa_table",
    "spearman_brown",
    "split_halves",
    "square",
    "u_centre_gram",
    "upper_tri",
]
