"""Noise ceilings of the representation metrics: split halves of the repeats."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

from ..neural.reliability import _nan_to_mean, pearson_rows, spearman_brown
from .gram import Representations, rdm_from_gram


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
    repeats partitioned; NaN ceilings where a half has fewer than 2 repeats. The whole
    array as one block of `SplitHalfSums`.
    """
    names = list(groups)
    acc = SplitHalfSums(
        len(names), responses.shape[1], responses.shape[-1], n_splits, seed, crossnobis
    )
    acc.update(responses, [groups[g] for g in names])
    return acc.ceilings(names, range(len(names)), metrics, remove_mean_pattern)


class GramSums:
    """The Gram statistics of G representations (stimuli x cells), summed over blocks of
    cells in float64: what `GramAccumulator` keeps, so `gram.rdm_from_gram` gives the RDM."""

    def __init__(self, n_groups: int, n_stimuli: int):
        G, n = int(n_groups), int(n_stimuli)
        self.K, self.row, self.cross = np.zeros((G, n, n)), np.zeros((G, n)), np.zeros((G, n))
        self.mu_sum, self.mu_sq, self.p = np.zeros(G), np.zeros(G), np.zeros(G, dtype=np.int64)

    def update(self, X: np.ndarray, members) -> None:
        """Add a block X (cells, stimuli); members: each group's positions in it."""
        X = np.asarray(X, dtype=np.float64)
        mu = X.mean(1)  # each cell's mean over stimuli: the Gram's column centring
        Xc = X - mu[:, None]
        for g, idx in enumerate(members):
            if len(idx):
                xc, m = Xc[idx], mu[idx]
                self.K[g] += xc.T @ xc
                self.row[g] += xc.sum(0)
                self.cross[g] += m @ xc
                self.mu_sum[g] += m.sum()
                self.mu_sq[g] += m @ m
                self.p[g] += len(idx)

    def representations(self, names, groups, remove_mean_pattern: bool) -> Representations:
        """The Representations of the groups (indices) ``groups``, named ``names``."""
        eps = float(np.finfo(np.float64).eps)
        rdms = []
        for g in groups:
            if remove_mean_pattern:  # as GramAccumulator.rdm: feature means of zero
                stats = (np.zeros_like(self.cross[g]), 0.0, 0.0)
            else:
                stats = (self.cross[g], float(self.mu_sum[g]), float(self.mu_sq[g]))
            rdms.append(rdm_from_gram(self.K[g], self.row[g], *stats, int(self.p[g]), eps=eps))
        return Representations(list(names), self.K[list(groups)], np.stack(rdms))


class SplitHalfSums:
    """Split-half ceilings and per-cell reliabilities, fed blocks of cells.

    The splits are ``split_halves``' (one seeded permutation of the repeats each); per split
    and half the groups' Gram statistics (`GramSums`) and crossnobis sums
    (`rdm_methods.GroupCrossnobis`, each half's repeats partitioned) add up over blocks, and
    each cell's half-vs-half Pearson r (`cell_reliability`'s) is kept. Memory: O(groups x
    splits x stimuli^2), whatever the number of cells.
    """

    def __init__(
        self, n_groups, n_stimuli, n_repeats, n_splits=10, seed=0, crossnobis=(2, "identity")
    ):
        from .rdm_methods import GroupCrossnobis

        if n_repeats < 2:
            raise ValueError("split halves need at least 2 repeats")
        rng = np.random.default_rng(seed)
        orders = [rng.permutation(n_repeats) for _ in range(int(n_splits))]
        self.halves = [(o[: n_repeats // 2], o[n_repeats // 2 :]) for o in orders]
        self.grams = [[GramSums(n_groups, n_stimuli) for _ in range(2)] for _ in orders]
        k, noise = int(crossnobis[0]), crossnobis[1]
        self.crossnobis = [
            [
                GroupCrossnobis(n_groups, n_stimuli, min(k, len(r)), noise) if len(r) >= 2 else None
                for r in halves
            ]
            for halves in self.halves
        ]
        self.r: list[np.ndarray] = []  # per block: (splits, cells) half-vs-half r

    def update(self, responses: np.ndarray, members) -> None:
        """Add a block (cells, stimuli, repeats); members: each group's positions in it."""
        rs = []
        for s, halves in enumerate(self.halves):
            means = []
            for h, rep in enumerate(halves):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    m = _nan_to_mean(np.nanmean(responses[..., rep], axis=-1))
                self.grams[s][h].update(m, members)
                if self.crossnobis[s][h] is not None:
                    self.crossnobis[s][h].update(responses[..., rep], members)
                means.append(m)
            rs.append(pearson_rows(*means))
        self.r.append(np.stack(rs))

    def reliability(self) -> np.ndarray:
        """(cells,) split-half reliability of the cells added, in order (`cell_reliability`)."""
        return spearman_brown(np.mean(np.concatenate(self.r, axis=1), axis=0))

    def ceilings(self, names, groups, metrics=None, remove_mean_pattern=False) -> dict:
        """{metric: (G,)} ceilings of the groups (indices) ``groups``, named ``names``."""
        from .rdm_methods import MissingRDMs
        from .registry import get_metric

        groups = list(groups)
        specs = [get_metric(m) for m in split_half_metrics(metrics)]
        acc: dict[str, list] = {m.name: [] for m in specs}
        for grams, cns in zip(self.grams, self.crossnobis, strict=True):
            ra, rb = (g.representations(names, groups, remove_mean_pattern) for g in grams)
            for r, cn in ((ra, cns[0]), (rb, cns[1])):
                r.named = {} if cn is None else {"crossnobis": cn.rdms(groups)}
            for m in specs:
                try:
                    acc[m.name].append(_paired_scores(m, ra, rb))
                except MissingRDMs:
                    acc[m.name].append(np.full(len(groups), np.nan))
        return {k: spearman_brown(np.mean(v, axis=0)) for k, v in acc.items()}


def _one(reps: Representations, g: int) -> Representations:
    named = None if reps.named is None else {k: v[g : g + 1] for k, v in reps.named.items()}
    return Representations([reps.names[g]], reps.grams[g : g + 1], reps.rdms[g : g + 1], named)


def _paired_scores(m, ra: Representations, rb: Representations) -> np.ndarray:
    """(G,) metric of each group's half a against its half b: the diagonal of the full
    (G, G) score, computed pair by pair (a costly comparator, tau-a, needs G not G^2)."""
    return np.array([m.score(_one(ra, g), _one(rb, g))[0, 0] for g in range(len(ra.names))])
