"""RDM distances and RDM comparators, one registry entry each (rsatoolbox's definitions).

Distances (``DISTANCES``): how a representation becomes an RDM.

- ``correlation``: 1 - Pearson between stimulus patterns (``rsa.rdm``; the job's RDMs).
- ``euclidean``: squared Euclidean distance per feature, rsatoolbox's
  ``calc_rdm(method="euclidean")``; from a Gram matrix, d_ij = K_ii + K_jj - 2 K_ij
  (column centring does not change it). The RSA metrics use it without the 1 / features
  factor, which no comparator sees (all are scale-free per RDM).
- ``crossnobis``: cross-validated squared Mahalanobis (identity noise: cross-validated
  Euclidean) from independent partitions of the repeats, rsatoolbox's
  ``calc_rdm_crossnobis`` with leave-one-partition-out folds. It needs repeats: prepare
  stores each group's (``rdm_crossnobis`` in the neural store), the job hands them to the
  neural side (``Representations.named``); a model side (no repeats) uses its squared
  Euclidean RDM, the distance crossnobis estimates without bias.

Comparators (``COMPARATORS``): rsatoolbox's ``compare(method=...)`` on upper triangles,
each with its permutation null and bootstrap rule.

- ``spearman``, ``pearson`` (rsatoolbox ``corr``), ``rho_a`` (``rho-a``), ``cosine``:
  dot products of transformed vectors; null: ``inference.rsa_null`` (one gather and product
  per block of permutations).
- ``kendall_tau_a`` (``tau-a``): sign products of all pairs of entries for short vectors
  (while their sign matrices fit in ``rsa.TAU_SIGN_BYTES``), scipy's O(pairs log pairs) per
  comparison beyond; null and bootstrap loop over permutations / resamples (118 images:
  P x groups x layers scipy calls of ~4 ms each; choose it knowingly).
- ``cosine_cov``, ``corr_cov``: whitened cosine and correlation with the RDM covariance of
  rsatoolbox's ``_get_v(n, sigma_k=None)``. rsatoolbox computes them as the Frobenius cosine
  of the double-centred matrices H(-D/2)H (``_cov_weighting``), i.e. biased linear CKA of
  -D/2 (for ``corr_cov`` the vector is centred first). A permutation of the images commutes
  with H, so the null is ``inference.cka_null`` on those matrices. An RDM with a NaN pair
  gives NaN (rsatoolbox's NaN path re-solves with the covariance of the kept pairs). Of
  squared Euclidean RDMs, H(-D/2)H is the centred Gram: rsa_euclidean_cosine_cov is
  cka_biased.

Bootstrap: spearman and pearson have the vectorised ``bootstrap.rsa_bootstrap``; rho_a,
cosine and kendall_tau_a loop over resamples on the kept pairs (the pairs of a stimulus with
its own copy dropped, as rsa_bootstrap); the whitened comparators rescore each resampled RDM
(copy pairs kept, at distance 0: the whitening needs the full square).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from .rsa import square, upper_tri


@dataclasses.dataclass(frozen=True)
class Distance:
    """An RDM distance: ``from_reps(reps)`` gives the (k, n, n) RDMs of a `Representations`
    (None: no RSA metric is made of it)."""

    name: str
    description: str
    from_reps: Callable | None = None


@dataclasses.dataclass(frozen=True)
class Comparator:
    """An RDM comparator: ``compare(a, b)`` on (A, pairs) and (B, pairs) upper triangles gives
    (A, B); ``null(a, b, perms, device)`` (n_perm, A, B); ``bootstrap(neural_rdms,
    model_rdms, indices, device)`` (n_boot, A, B) or None (each resample rescored)."""

    name: str
    rsatoolbox: str
    description: str
    compare: Callable
    null: Callable
    bootstrap: Callable | None = None


class MissingRDMs(ValueError):
    """A neural side lacks the RDMs a distance needs from the repeats (crossnobis)."""


DISTANCES: dict[str, Distance] = {}
COMPARATORS: dict[str, Comparator] = {}


def register_distance(d: Distance) -> Distance:
    if d.name in DISTANCES:
        raise ValueError(f"RDM distance {d.name!r} is already registered")
    DISTANCES[d.name] = d
    return d


def register_comparator(c: Comparator) -> Comparator:
    if c.name in COMPARATORS:
        raise ValueError(f"RDM comparator {c.name!r} is already registered")
    COMPARATORS[c.name] = c
    return c


# --------------------------------------------------------------------------- distances


def euclidean_from_gram(K, n_features: int | None = None) -> np.ndarray:
    """Squared Euclidean RDM(s) from Gram matrices (..., n, n); / n_features when given
    (rsatoolbox's scale)."""
    K = np.asarray(K, dtype=np.float64)
    d = np.diagonal(K, axis1=-2, axis2=-1)
    D = d[..., :, None] + d[..., None, :] - 2 * K
    D = np.clip((D + np.swapaxes(D, -1, -2)) / 2, 0, None)
    idx = np.arange(K.shape[-1])
    D[..., idx, idx] = 0.0
    return D / n_features if n_features else D


def rdm_euclidean(X) -> np.ndarray:
    """Square squared-Euclidean RDM of X (stimuli, features) / features, as rsatoolbox."""
    X = np.asarray(X, dtype=np.float64)
    return euclidean_from_gram(X @ X.T, X.shape[1])


def partitions(n_repeats: int, n_partitions: int) -> np.ndarray:
    """(n_repeats,) partition of each repeat: repeat r goes to r mod n_partitions."""
    if not 2 <= n_partitions <= n_repeats:
        raise ValueError(f"crossnobis needs 2 <= partitions <= repeats ({n_repeats})")
    return np.arange(n_repeats) % n_partitions


def noise_precision_diag(responses) -> np.ndarray:
    """(cells,) univariate noise precision: 1 / each cell's residual variance around its
    stimulus means (dof = observations - stimuli), rsatoolbox's
    ``prec_from_residuals(method="diag")`` with that dof."""
    R = np.asarray(responses, dtype=np.float64)
    finite = np.isfinite(R)
    n = finite.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(finite, R, 0.0).sum(-1) / n
        res = np.where(finite, R - mean[..., None], 0.0)
        var = (res * res).sum((-2, -1)) / (finite.sum((-2, -1)) - (n > 0).sum(-1))
        return np.where(var > 0, 1.0 / var, 0.0)


def _partition_means(R: np.ndarray, part: np.ndarray, k: int):
    """(k, cells, stimuli) partition means; a cell without a repeat of a stimulus in a
    partition takes its mean over that stimulus's repeats (over stimuli if it has none);
    (stimuli,) whether some cell has a repeat in every partition."""
    finite = np.isfinite(R)
    Z = np.where(finite, R, 0.0)
    sums = np.stack([Z[..., part == f].sum(-1) for f in range(k)])
    counts = np.stack([finite[..., part == f].sum(-1) for f in range(k)])
    with np.errstate(invalid="ignore", divide="ignore"):
        means = sums / counts
        fill = sums.sum(0) / counts.sum(0)
        fill = np.where(np.isfinite(fill), fill, np.nanmean(fill, 1, keepdims=True))
    means = np.where(counts > 0, means, np.nan_to_num(fill)[None])
    return means, counts, (counts > 0).any(1).all(0)


def _crossnobis_folds(R: np.ndarray, k: int):
    """Per-cell pieces of the crossnobis folds of R (cells, stimuli, repeats) float64:
    a (k, stimuli, cells) the mean of partition f, b (k, stimuli, cells) the mean of the
    other partitions, has (k, cells, stimuli) whether the cell has a repeat in partition f."""
    means, counts, _ = _partition_means(R, partitions(R.shape[-1], k), k)
    a, b = [], []
    for f in range(k):
        rest = np.delete(np.arange(k), f)
        w = counts[rest]
        other = ((means[rest] * w).sum(0) / np.maximum(w.sum(0), 1)).T
        a.append(means[f].T)  # (stimuli, cells)
        b.append(np.where(w.sum(0).T > 0, other, means[rest].mean(0).T))
    return np.stack(a), np.stack(b), counts > 0


def _crossnobis_sum(a: np.ndarray, Pb: np.ndarray) -> np.ndarray:
    """Sum over folds of d_ij = (a_i - a_j)' P (b_i - b_j): a sum over cells, so blocks of
    cells add up."""
    out = np.zeros((a.shape[1], a.shape[1]))
    for f in range(len(a)):
        K = a[f] @ Pb[f].T
        d = np.diagonal(K)
        out += d[:, None] + d[None, :] - K - K.T
    return out


def _crossnobis_finish(total: np.ndarray, has: np.ndarray, n_cells: int) -> np.ndarray:
    """The RDM from the folds' sum over ``n_cells`` cells; has (k, stimuli): whether some
    cell has a repeat of the stimulus in partition f (else NaN pairs)."""
    out = total / (len(has) * n_cells)
    np.fill_diagonal(out, 0.0)
    ok = has.all(0)
    out[~ok] = np.nan
    out[:, ~ok] = np.nan
    return out


def rdm_crossnobis(responses, n_partitions: int = 2, precision=None) -> np.ndarray:
    """Square crossnobis RDM from (cells, stimuli, repeats) responses (NaN: missing repeat).

    The repeats are split into ``n_partitions`` independent partitions (``partitions``);
    fold f compares the mean of partition f with the mean of the others, d_ij =
    (a_i - a_j)' P (b_i - b_j) / cells, averaged over folds, as rsatoolbox's
    ``calc_rdm_crossnobis`` with that cv_descriptor; ``precision``: the noise precision
    (cells, cells) or its diagonal (cells,) (``noise_precision_diag``); None = identity
    (cross-validated Euclidean). Unbiased: its expectation is the squared distance of the
    true patterns, so it can be negative. Missing repeats: see ``_partition_means``; a
    stimulus that no cell has in some partition gives NaN for its pairs.
    """
    R = np.asarray(responses, dtype=np.float64)
    if R.ndim != 3:
        raise ValueError(f"crossnobis needs (cells, stimuli, repeats), got shape {R.shape}")
    a, b, has = _crossnobis_folds(R, int(n_partitions))
    P = None if precision is None else np.asarray(precision, dtype=np.float64)
    Pb = b if P is None else (b * P if P.ndim == 1 else b @ P)
    return _crossnobis_finish(_crossnobis_sum(a, Pb), has.any(1), R.shape[0])


class GroupCrossnobis:
    """Crossnobis RDMs of cell groups, fed blocks of cells: each fold's products are sums
    over cells, and the noise (identity or ``noise_precision_diag``) is per cell, so the
    sums of the blocks give the RDMs of the whole groups."""

    def __init__(self, n_groups: int, n_stimuli: int, n_partitions: int, noise="identity"):
        if noise not in ("identity", "diagonal"):
            raise ValueError(f"crossnobis noise is identity or diagonal, not {noise!r}")
        self.k, self.noise = int(n_partitions), noise
        self.total = np.zeros((n_groups, n_stimuli, n_stimuli))
        self.has = np.zeros((n_groups, self.k, n_stimuli), dtype=bool)
        self.n_cells = np.zeros(n_groups, dtype=np.int64)

    def update(self, responses, members) -> None:
        """Add a block (cells, stimuli, repeats); members: each group's positions in it."""
        R = np.asarray(responses, dtype=np.float64)
        a, b, has = _crossnobis_folds(R, self.k)
        if self.noise == "diagonal":
            b = b * noise_precision_diag(R)
        for g, idx in enumerate(members):
            if len(idx):
                self.total[g] += _crossnobis_sum(a[..., idx], b[..., idx])
                self.has[g] |= has[:, idx].any(1)
                self.n_cells[g] += len(idx)

    def rdms(self, groups=None) -> np.ndarray:
        """(G, n, n) RDMs of the groups (indices; default all)."""
        groups = range(len(self.total)) if groups is None else groups
        return np.stack(
            [_crossnobis_finish(self.total[g], self.has[g], self.n_cells[g]) for g in groups]
        )


def group_crossnobis(responses, groups, n_partitions: int, noise: str = "identity") -> np.ndarray:
    """(G, n, n) crossnobis RDMs of the cell groups ``groups`` (positions) of responses
    (cells, stimuli, repeats); noise: identity or diagonal (``noise_precision_diag``)."""
    acc = GroupCrossnobis(len(groups), np.shape(responses)[1], n_partitions, noise)
    acc.update(responses, groups)
    return acc.rdms()


def _crossnobis_from_reps(reps) -> np.ndarray:
    """The neural side's crossnobis RDMs (prepared from the repeats); a model side (no
    repeats, ``named`` None) gives its squared Euclidean RDMs, the distance crossnobis
    estimates."""
    named = getattr(reps, "named", None)
    if named is None:
        return euclidean_from_gram(reps.grams)
    if "crossnobis" not in named:
        raise MissingRDMs(
            "rsa_crossnobis_*: the neural representations have no crossnobis RDMs "
            "(compare.prepare_neural computes them from the repeats: rdm_crossnobis)"
        )
    return named["crossnobis"]


register_distance(
    Distance("correlation", "1 - Pearson between stimulus patterns", lambda reps: reps.rdms)
)
register_distance(
    Distance(
        "euclidean",
        "squared Euclidean distance (from the Gram matrices)",
        lambda reps: euclidean_from_gram(reps.grams),
    )
)
register_distance(
    Distance(
        "crossnobis",
        "crossnobis (neural: cross-validated over partitions of the repeats) vs squared "
        "Euclidean (model)",
        _crossnobis_from_reps,
    )
)


# --------------------------------------------------------------------------- comparators


def whitened_grams(vecs, centre: bool) -> np.ndarray:
    """(k, n, n) -D/2 of upper-triangle vectors (centred first for corr_cov): rsatoolbox's
    whitened comparators are the biased linear CKA of these."""
    v = np.asarray(vecs, dtype=np.float64)
    if centre:
        v = v - v.mean(-1, keepdims=True)
    return -0.5 * square(v)


def _whitened(centre: bool):
    from .cka import cka_from_grams

    def fn(a, b):
        out = np.atleast_2d(
            cka_from_grams(whitened_grams(a, centre), whitened_grams(b, centre), False)
        )
        bad = ~np.isfinite(a).all(-1)[:, None] | ~np.isfinite(b).all(-1)[None, :]
        return np.where(bad, np.nan, out)

    return fn


def _whitened_null(centre: bool):
    def fn(a, b, perms, device):
        from .inference import cka_null

        return cka_null(whitened_grams(a, centre), whitened_grams(b, centre), perms, False, device)

    return fn


def _dot_null(method: str):
    def fn(a, b, perms, device):
        from .inference import rsa_null

        return rsa_null(a, b, perms, method, device)

    return fn


def _loop_null(method: str):
    """Each permutation of the neural RDM's images rescored (no shortcut exists)."""

    def fn(a, b, perms, device):
        from .rsa import _rsa_vectors

        D = square(np.asarray(a, dtype=np.float64))
        return np.stack([_rsa_vectors(upper_tri(D[:, p][:, :, p]), b, method, 0.5) for p in perms])

    return fn


def _tau_null(method: str):
    """tau-a: the model's sign products once, each permutation's neural ones (short finite
    vectors; otherwise each permutation rescored)."""

    def fn(a, b, perms, device):
        from . import rsa

        a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
        m = a.shape[-1]
        small = 8 * (len(a) + len(b)) * m * m <= rsa.TAU_SIGN_BYTES
        if not (small and np.isfinite(a).all() and np.isfinite(b).all()):
            return _loop_null(method)(a, b, perms, device)
        n = square(a[:1]).shape[-1]
        iu, ju = np.triu_indices(n, k=1)
        pair = np.zeros((n, n), dtype=np.int64)
        pair[iu, ju] = pair[ju, iu] = np.arange(m)
        sbT = rsa._signs(b).T
        perms = np.asarray(perms, dtype=np.int64)
        return np.stack([rsa._signs(a[:, pair[p[iu], p[ju]]]) @ sbT for p in perms]) / (m * (m - 1))

    return fn


def _fast_bootstrap(method: str):
    def fn(neural_rdms, model_rdms, indices, device):
        from .bootstrap import rsa_bootstrap

        return rsa_bootstrap(neural_rdms, model_rdms, indices, method, device)

    return fn


def _kept_pairs_bootstrap(method: str):
    """Each resample's kept pairs (no pair of a stimulus with its own copy), rescored."""

    def fn(neural_rdms, model_rdms, indices, device):
        from .bootstrap import resampled_pairs
        from .rsa import _rsa_vectors

        A, B = np.asarray(neural_rdms), np.asarray(model_rdms)
        out = np.empty((len(indices), len(A), len(B)))
        for k, idx in enumerate(np.asarray(indices, dtype=np.int64)):
            i, j = resampled_pairs(idx)
            out[k] = _rsa_vectors(A[:, i, j], B[:, i, j], method, 0.5)
        return out

    return fn


for _name, _tb, _what, _null, _boot in (
    ("spearman", "spearman", "Spearman correlation", _dot_null, _fast_bootstrap),
    ("pearson", "corr", "Pearson correlation", _dot_null, _fast_bootstrap),
    ("rho_a", "rho-a", "Spearman's rho-a", _dot_null, _kept_pairs_bootstrap),
    ("cosine", "cosine", "cosine similarity", _dot_null, _kept_pairs_bootstrap),
    ("kendall_tau_a", "tau-a", "Kendall's tau-a", _tau_null, _kept_pairs_bootstrap),
):  # fmt: skip
    register_comparator(
        Comparator(
            _name, _tb, _what, lambda a, b, _m=_tb: _vectors(a, b, _m), _null(_tb), _boot(_tb)
        )
    )
for _name, _centre, _what in (
    ("cosine_cov", False, "whitened cosine"),
    ("corr_cov", True, "whitened correlation"),
):
    register_comparator(
        Comparator(_name, _name, _what, _whitened(_centre), _whitened_null(_centre))
    )


def _vectors(a, b, method: str) -> np.ndarray:
    from .rsa import _rsa_vectors

    return _rsa_vectors(np.atleast_2d(a), np.atleast_2d(b), method, 0.5)


def compare_rdms(rdm_a, rdm_b, comparator: str) -> np.ndarray:
    """(A, B) comparisons of square RDM stacks (A, n, n) and (B, n, n) by a registered
    comparator."""
    if comparator not in COMPARATORS:
        raise ValueError(f"unknown RDM comparator {comparator!r}; known: {sorted(COMPARATORS)}")
    a = upper_tri(np.asarray(rdm_a, dtype=np.float64).reshape((-1,) + np.shape(rdm_a)[-2:]))
    b = upper_tri(np.asarray(rdm_b, dtype=np.float64).reshape((-1,) + np.shape(rdm_b)[-2:]))
    return COMPARATORS[comparator].compare(a, b)
