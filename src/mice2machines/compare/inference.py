"""Chance levels and tests for model-versus-brain scores: permutation nulls, p, q.

The null hypothesis is that a model's layer carries no information about which image evoked
which neural response. Its null distribution comes from permuting the image labels of the
neural data (never the model's): ``permutations(n, n_perm, seed)`` draws them once per run, and
the same rows are used for every layer and every model, so that nulls are comparable and
p-values of one neural group are computed against the same relabellings.

- ``rsa_null``, ``cka_null``: (n_perm, groups, layers) scores with the neural RDM / Gram
  permuted, one matrix product per block of permutations.
- ``permuted_columns``, ``unstack_null``: permuted responses stacked as extra cells, so that a
  streaming accumulator over units (one-to-one matching, RF-RMSE) computes the null of the
  same max over the same units in the same pass.
- Ridge's null (every permuted training set refitted exactly, in batched products) lives
  with the ridge engine, ``compare.ridge``; per-fold scoring in ``compare.crossval``.
- ``p_values`` (p = (1 + #{null at least as good}) / (1 + n_perm)), ``null_summary``,
  ``bh_q`` (Benjamini-Hochberg across layers x groups), ``group_null_median``.

Everything is float64 and deterministic for a given seed. ``device``: "cpu" is numpy;
"cuda", "cuda:N" or "torch:cpu" runs the batched products in torch on that device.
"""

from __future__ import annotations

import warnings

import numpy as np

from .. import devices
from ..devices import array_backend, put64, to_numpy
from .cka import centre_gram, u_centre_gram
from .rsa import _rank

_PERM_STREAM = 0x7065726D  # the permutations' own random stream, apart from folds/bootstrap


# --------------------------------------------------------------------------- permutations


def permutations(n: int, n_perm: int, seed: int = 0) -> np.ndarray:
    """(n_perm, n) int64 seeded permutations of the image labels.

    Row k gives image i the responses of image perms[k, i]: responses Y[perms[k]], whose RDM
    and Gram are D[p][:, p] and K[p][:, p] (p = perms[k]), as ``rsa_null``, ``cka_null`` and
    ``ridge_fold_scores`` use them. A run draws them once and uses the same rows for every
    layer and model. They come from a random stream of their own, so that they never
    coincide with ``kfold``'s or the bootstrap's draws for the same seed. Rows are independent
    uniform permutations (the identity may occur, as the p-value's +1 assumes).
    """
    if n < 1 or n_perm < 0:
        raise ValueError(f"need n >= 1 and n_perm >= 0, got n={n}, n_perm={n_perm}")
    if n_perm == 0:
        return np.empty((0, n), dtype=np.int64)
    rng = np.random.default_rng([_PERM_STREAM, int(seed)])
    return rng.permuted(np.tile(np.arange(n, dtype=np.int64), (n_perm, 1)), axis=1)


def check_perms(perms, n: int) -> np.ndarray:
    """(n_perm, n) int64 permutations of range(n), checked row by row."""
    perms = np.asarray(perms)
    if perms.ndim != 2 or perms.shape[1] != n:
        raise ValueError(f"perms must be (n_perm, {n}), got shape {perms.shape}")
    if not np.issubdtype(perms.dtype, np.integer):
        raise ValueError(f"perms must be integers, got {perms.dtype}")
    perms = perms.astype(np.int64, copy=False)
    if len(perms) and not (np.sort(perms, axis=1) == np.arange(n)).all():
        raise ValueError("every row of perms must be a permutation of range(n)")
    return perms


# --------------------------------------------------------------------------- p and q


def p_values(observed, null, higher_is_better: bool = True) -> np.ndarray:
    """Permutation p-values: (1 + #{null >= observed}) / (1 + n_valid) (<= if lower is better).

    observed (...), null (n_perm, ...). Non-finite null values are left out of both counts;
    p is NaN where observed is NaN or no null value is finite. Ties count against the
    observed score (conservative).
    """
    obs = np.asarray(observed, dtype=np.float64)
    null = np.asarray(null, dtype=np.float64)
    if null.shape[1:] != obs.shape:
        raise ValueError(f"null {null.shape} does not match observed {obs.shape}")
    finite = np.isfinite(null)
    hit = (null >= obs) if higher_is_better else (null <= obs)
    count = (hit & finite).sum(0)
    valid = finite.sum(0)
    p = (1.0 + count) / (1.0 + valid)
    return np.where(np.isnan(obs) | (valid == 0), np.nan, p)


def null_summary(observed, null, higher_is_better: bool = True) -> dict[str, np.ndarray]:
    """Mean, sd (ddof=1), p, chance-corrected score and z of observed scores against nulls.

    ``corrected`` = observed - null_mean (in the score's own direction); ``z`` = corrected /
    null_sd, negated when lower is better, so that z > 0 means better than chance for every
    metric. Non-finite null values are left out; z is NaN where null_sd is not positive.
    """
    obs = np.asarray(observed, dtype=np.float64)
    null = np.asarray(null, dtype=np.float64)
    p = p_values(obs, null, higher_is_better)
    finite = np.isfinite(null)
    count = finite.sum(0)
    x = np.where(finite, null, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = x.sum(0) / count
        dev = np.where(finite, null - mean, 0.0)
        sd = np.sqrt((dev * dev).sum(0) / (count - 1))
    mean = np.where(count > 0, mean, np.nan)
    sd = np.where(count > 1, sd, np.nan)
    corrected = obs - mean
    sign = 1.0 if higher_is_better else -1.0
    with np.errstate(invalid="ignore", divide="ignore"):
        z = np.where(sd > 0, sign * corrected / sd, np.nan)
    return {"null_mean": mean, "null_sd": sd, "p": p, "corrected": corrected, "z": z}


def bh_q(p, axis: int | None = None) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (q), over all entries or along `axis`.

    NaNs are ignored (not counted as tests) and stay NaN; q is monotone in p and at most 1,
    as scipy.stats.false_discovery_control(method="bh") on the finite entries.
    """
    p = np.asarray(p, dtype=np.float64)
    finite = np.isfinite(p)
    if ((p[finite] < 0) | (p[finite] > 1)).any():
        raise ValueError("p-values must lie in [0, 1]")
    if p.size == 0:
        return p.copy()
    if axis is None:
        return _bh_rows(p.reshape(1, -1)).reshape(p.shape)
    moved = np.moveaxis(p, axis, -1)
    q = _bh_rows(moved.reshape(-1, moved.shape[-1])).reshape(moved.shape)
    return np.moveaxis(q, -1, axis)


def _bh_rows(p: np.ndarray) -> np.ndarray:
    finite = np.isfinite(p)
    key = np.where(finite, p, np.inf)
    order = np.argsort(key, axis=1, kind="stable")
    s = np.take_along_axis(key, order, axis=1)
    m = finite.sum(1, keepdims=True)
    with np.errstate(invalid="ignore"):
        q = s * (m / np.arange(1.0, p.shape[1] + 1.0))
    q = np.minimum.accumulate(q[:, ::-1], axis=1)[:, ::-1]
    out = np.empty_like(q)
    np.put_along_axis(out, order, np.minimum(q, 1.0), axis=1)
    return np.where(finite, out, np.nan)


# --------------------------------------------------------------------------- RSA and CKA nulls


def _n_from_pairs(m: int) -> int:
    n = int(round((1 + np.sqrt(1 + 8 * m)) / 2))
    if n * (n - 1) // 2 != m:
        raise ValueError(f"{m} is not a triangular number of pairs")
    return n


def _prepared(v: np.ndarray, method: str) -> np.ndarray:
    """RDM vectors transformed so that one dot product is the comparison (see RDM_COMPARATORS);
    every step commutes with a permutation of the pairs."""
    if method in ("spearman", "rho-a"):
        v = _rank(v)
    if method != "cosine":
        v = v - v.mean(-1, keepdims=True)
    if method == "rho-a":
        m = v.shape[-1]
        return v * np.sqrt(12.0 / (m**3 - m))
    norm = np.sqrt(np.einsum("ij,ij->i", v, v))
    with np.errstate(invalid="ignore", divide="ignore"):
        return v / norm[:, None]


def rsa_null(neural_vecs, model_vecs, perms, method: str = "spearman", device="cpu") -> np.ndarray:
    """(n_perm, G, L) RSA scores with the images of each neural RDM permuted.

    neural_vecs (G, pairs), model_vecs (L, pairs): upper-triangle RDM vectors over the same n
    images; perms (n_perm, n). Permutation k compares D[perms[k]][:, perms[k]] with each
    model RDM. Methods: spearman, pearson (alias corr), rho-a, cosine, as ``similarity.rsa``.
    A permutation of the images permutes the pair vector, and ranks, means and norms commute
    with it, so vectors are transformed once and each block of permutations is a gather and
    one matrix product. RDMs are assumed finite: a vector with a non-finite entry gets NaN
    (the caller scores those with NaN-dropping ``similarity.rsa``, or reports NaN).
    """
    if method not in ("spearman", "pearson", "corr", "rho-a", "cosine"):
        raise ValueError(f"unknown RSA method {method!r}")
    a = np.atleast_2d(np.asarray(neural_vecs, dtype=np.float64))
    b = np.atleast_2d(np.asarray(model_vecs, dtype=np.float64))
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"expected (G, pairs) and (L, pairs), got {a.shape} and {b.shape}")
    m = a.shape[1]
    n = _n_from_pairs(m)
    perms = check_perms(perms, n)
    bad_a = ~np.isfinite(a).all(1)
    bad_b = ~np.isfinite(b).all(1)
    ua = np.where(bad_a[:, None], 0.0, _prepared(np.where(bad_a[:, None], 0.0, a), method))
    ub = np.where(bad_b[:, None], 0.0, _prepared(np.where(bad_b[:, None], 0.0, b), method))
    ua = np.nan_to_num(ua, nan=0.0)  # zero-variance vectors, set to NaN below
    ub = np.nan_to_num(ub, nan=0.0)
    if method != "rho-a":  # constant vectors: no correlation (rho-a gives 0)
        bad_a |= ~(np.abs(ua).sum(1) > 0)
        bad_b |= ~(np.abs(ub).sum(1) > 0)

    iu, ju = np.triu_indices(n, k=1)
    pair = np.zeros((n, n), dtype=np.int64)
    pair[iu, ju] = np.arange(m)
    pair[ju, iu] = np.arange(m)
    xp, tdev = array_backend(device)
    ua_d, ubT = put64(ua, tdev), put64(ub.T, tdev)
    pair_d, iu_d, ju_d = (put64(x, tdev, integer=True) for x in (pair, iu, ju))
    G, L, P = len(a), len(b), len(perms)
    out = np.empty((P, G, L))
    step = max(1, devices.MAX_BLOCK_BYTES // (8 * (G + 3) * m))
    for lo in range(0, P, step):
        pb = put64(perms[lo : lo + step], tdev, integer=True)
        idx = pair_d[pb[:, iu_d], pb[:, ju_d]]  # (block, pairs): where each permuted pair was
        prod = ua_d[:, idx].reshape(-1, m) @ ubT  # (G * block, L)
        out[lo : lo + len(pb)] = to_numpy(xp.moveaxis(prod.reshape(G, len(pb), L), 1, 0))
    out[:, bad_a] = np.nan
    out[:, :, bad_b] = np.nan
    return out


def cka_null(neural_grams, model_grams, perms, unbiased: bool = True, device="cpu") -> np.ndarray:
    """(n_perm, G, L) linear CKA with each neural Gram's images permuted (K[p][:, p]).

    neural_grams (G, n, n), model_grams (L, n, n); as ``similarity.cka_from_grams`` (unbiased
    HSIC by default). U-centring and double centring commute with a joint permutation of rows
    and columns, so the Grams are centred and normalised once; each block of permutations is
    a gather and one matrix product. Non-finite or all-zero Grams give NaN.
    """
    K = np.asarray(neural_grams, dtype=np.float64)
    M = np.asarray(model_grams, dtype=np.float64)
    K = K[None] if K.ndim == 2 else K
    M = M[None] if M.ndim == 2 else M
    n = K.shape[-1]
    if K.shape[1:] != (n, n) or M.shape[1:] != (n, n):
        raise ValueError(f"expected (G, n, n) and (L, n, n), got {K.shape} and {M.shape}")
    perms = check_perms(perms, n)
    centre = u_centre_gram if unbiased else centre_gram

    def unit(X):
        bad = ~np.isfinite(X).all((1, 2))
        C = centre(np.where(bad[:, None, None], 0.0, X))
        norm = np.sqrt(np.einsum("gij,gij->g", C, C))
        bad |= ~(norm > 0)
        with np.errstate(invalid="ignore", divide="ignore"):
            C = np.where(bad[:, None, None], 0.0, C / norm[:, None, None])
        return C, bad

    A, bad_a = unit(K)
    B, bad_b = unit(M)
    xp, tdev = array_backend(device)
    A_d, BT = put64(A, tdev), put64(B.reshape(len(B), -1).T, tdev)
    G, L, P = len(A), len(B), len(perms)
    out = np.empty((P, G, L))
    step = max(1, devices.MAX_BLOCK_BYTES // (8 * (G + 1) * n * n))
    for lo in range(0, P, step):
        pb = put64(perms[lo : lo + step], tdev, integer=True)
        gathered = A_d[:, pb[:, :, None], pb[:, None, :]]  # (G, block, n, n)
        prod = gathered.reshape(G * len(pb), n * n) @ BT
        out[lo : lo + len(pb)] = to_numpy(xp.moveaxis(prod.reshape(G, len(pb), L), 1, 0))
    out[:, bad_a] = np.nan
    out[:, :, bad_b] = np.nan
    return out


# --------------------------------------------------------------------------- max-over-units nulls


def permuted_columns(Y, perms) -> np.ndarray:
    """(n, n_perm * cells): responses Y (n, cells) with image labels permuted, stacked as cells.

    Column k * cells + c is cell c under permutation k, Y[perms[k], c]. Fed to a streaming
    accumulator over units as extra neurons (``similarity.MatchAccumulator``; for the RF-RMSE
    accumulator the neuron maps are recomputed from these columns), it gives the null of the
    same max over the same units in the same pass; ``unstack_null`` reshapes its results.
    """
    Y = np.asarray(Y)
    if Y.ndim != 2:
        raise ValueError(f"Y must be (n, cells), got shape {Y.shape}")
    perms = check_perms(perms, Y.shape[0])
    return np.ascontiguousarray(Y[perms].transpose(1, 0, 2).reshape(Y.shape[0], -1))


def unstack_null(values, n_perm: int, n_cells: int) -> np.ndarray:
    """(..., n_perm * cells) results on ``permuted_columns`` -> (..., n_perm, cells)."""
    values = np.asarray(values)
    if values.shape[-1] != n_perm * n_cells:
        raise ValueError(f"last axis {values.shape[-1]} is not {n_perm} x {n_cells}")
    return values.reshape(values.shape[:-1] + (n_perm, n_cells))


def group_null_median(null_cells, membership) -> np.ndarray:
    """(n_perm, G) NaN-median over each group's cells of null_cells (n_perm, cells).

    The group score's null, as the observed group score is the median over its cells.
    Empty groups and groups without a finite value give NaN.
    """
    null = np.asarray(null_cells, dtype=np.float64)
    membership = np.asarray(membership, dtype=bool)
    if null.ndim != 2 or membership.ndim != 2 or membership.shape[1] != null.shape[1]:
        raise ValueError(
            f"expected (n_perm, cells) and (G, cells): {null.shape}, {membership.shape}"
        )
    out = np.full((len(null), len(membership)), np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for g, m in enumerate(membership):
            if m.any():
                out[:, g] = np.nanmedian(null[:, m], axis=1)
    return out
