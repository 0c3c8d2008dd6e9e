"""Noise ceilings of the representation metrics: split halves of the repeats."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np

from ..neural.reliability import _nan_to_mean, spearman_brown, split_halves
from .gram import Representations


def split_half_metrics(metrics: Sequence[str] | None = None) -> list[str]:
    """The registered metrics (of ``metrics``, default all) whose ceiling rule is split_half."""
    from .registry import METRICS, get_metric

    names = list(METRICS) if metrics is None else list(metrics)
    return [m for m in names if get_metric(m).ceiling == "split_half"]


def group_ceilings(
    responses: np.ndarray,
    groups: dict,
    n_splits: int = 10,
    seed: int = 0,
    metrics: Sequence[str] | None = None,
    remove_mean_pattern: bool = False,
    crossnobis: tuple[int, str] = (2, "identity"),
) -> dict:
    """Split-half (Spearman-Brown) ceilings of the representation metrics for neural groups.

    responses: (cells, stimuli, repeats); groups: {name: cell positions}; metrics: those with
    a split_half ceiling rule (default: every registered one). Returns {metric: (G,) array},
    the step-up of the mean over splits of each metric's half-vs-half score.
    ``remove_mean_pattern``: of the RSA RDMs, as in `rdm`. ``crossnobis``: (partitions,
    noise) of the halves' crossnobis RDMs (the rsa_crossnobis_* metrics), each half's
    repeats partitioned; NaN ceilings where a half has fewer than 2 repeats.
    """
    from .rdm_methods import MissingRDMs, group_crossnobis
    from .registry import get_metric

    names = list(groups)
    specs = [get_metric(m) for m in split_half_metrics(metrics)]
    reps = functools.partial(
        Representations.from_arrays, dtype=np.float64, remove_mean_pattern=remove_mean_pattern
    )
    acc: dict[str, list] = {m.name: [] for m in specs}
    rng = np.random.default_rng(seed)  # the repeats of split_halves' halves
    for a, b in split_halves(responses, n_splits, seed):
        order = rng.permutation(responses.shape[-1])
        a = _nan_to_mean(a)
        b = _nan_to_mean(b)
        ra = reps([a[groups[g]].T for g in names], names)
        rb = reps([b[groups[g]].T for g in names], names)
        half, pos = len(order) // 2, [groups[g] for g in names]
        for r, rep in ((ra, order[:half]), (rb, order[half:])):
            r.named = {}
            if len(rep) >= 2:
                k = min(int(crossnobis[0]), len(rep))
                cn = group_crossnobis(responses[..., rep], pos, k, crossnobis[1])
                r.named["crossnobis"] = cn
        for m in specs:
            try:
                acc[m.name].append(_paired_scores(m, ra, rb))
            except MissingRDMs:
                acc[m.name].append(np.full(len(names), np.nan))
    return {k: spearman_brown(np.mean(v, axis=0)) for k, v in acc.items()}


def _one(reps: Representations, g: int) -> Representations:
    named = None if reps.named is None else {k: v[g : g + 1] for k, v in reps.named.items()}
    return Representations([reps.names[g]], reps.grams[g : g + 1], reps.rdms[g : g + 1], named)


def _paired_scores(m, ra: Representations, rb: Representations) -> np.ndarray:
    """(G,) metric of each group's half a against its half b: the diagonal of the full
    (G, G) score, computed pair by pair (a costly comparator, tau-a, needs G not G^2)."""
    return np.array([m.score(_one(ra, g), _one(rb, g))[0, 0] for g in range(len(ra.names))])
