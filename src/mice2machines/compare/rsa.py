"""RDMs and their comparison (RSA): 1 - Pearson RDMs, comparators by name, rsatoolbox's conventions."""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np

from ..devices import cpu_workers, thread_pool


def rdm(X, dtype=np.float64, remove_mean_pattern: bool = False) -> np.ndarray:
    """Square RDM, 1 - Pearson correlation between the rows (stimuli) of X (stimuli x features).

    As rsatoolbox's ``calc_rdm(method="correlation")``; with ``remove_mean_pattern`` each
    feature is first centred over the stimuli (the mean pattern removed). A constant row gives
    NaN dissimilarities.
    """
    X = np.asarray(X, dtype=dtype)
    if X.ndim != 2:
        raise ValueError(f"rdm expects a (stimuli, features) array, got shape {X.shape}")
    if remove_mean_pattern:
        X = X - X.mean(axis=0)
    Xc = X - X.mean(axis=1, keepdims=True)
    norm = np.sqrt(np.einsum("ij,ij->i", Xc, Xc))
    with np.errstate(invalid="ignore", divide="ignore"):
        Z = Xc / norm[:, None]
    out = 1.0 - (Z @ Z.T).astype(np.float64)
    out = (out + out.T) / 2  # exactly symmetric
    np.fill_diagonal(out, np.where(norm > 0, 0.0, np.nan))
    return out


def upper_tri(rdms: np.ndarray) -> np.ndarray:
    """Upper-triangle vectors (k=1) of one (n, n) or a stack (..., n, n) of square RDMs."""
    rdms = np.asarray(rdms)
    n = rdms.shape[-1]
    i, j = np.triu_indices(n, k=1)
    return rdms[..., i, j]


def square(vector: np.ndarray) -> np.ndarray:
    """Square RDM(s) from upper-triangle vector(s) (..., n(n-1)/2)."""
    v = np.asarray(vector)
    m = v.shape[-1]
    n = int(round((1 + np.sqrt(1 + 8 * m)) / 2))
    if n * (n - 1) // 2 != m:
        raise ValueError(f"{m} is not a triangular number of pairs")
    out = np.zeros(v.shape[:-1] + (n, n), dtype=v.dtype)
    i, j = np.triu_indices(n, k=1)
    out[..., i, j] = v
    out[..., j, i] = v
    return out


def _rdm_vectors(r) -> tuple[np.ndarray, bool]:
    """(k, pairs) vectors from a square RDM, a stack of squares, a vector or a stack of them."""
    r = np.asarray(r, dtype=np.float64)
    if r.ndim == 1:
        return r[None], True
    if r.ndim == 2 and r.shape[0] == r.shape[1]:
        return upper_tri(r)[None], True
    if r.ndim == 3 and r.shape[1] == r.shape[2]:
        return upper_tri(r), False
    if r.ndim == 2:
        return r, False
    raise ValueError(f"cannot read RDMs of shape {r.shape}")


def _centred_unit(v: np.ndarray) -> np.ndarray:
    v = v - v.mean(axis=-1, keepdims=True)
    norm = np.sqrt(np.einsum("...i,...i->...", v, v))
    with np.errstate(invalid="ignore", divide="ignore"):
        return v / norm[..., None]


def _rank_rows(v: np.ndarray) -> np.ndarray:
    """Average ranks along the last axis of a 2-D block: one unstable argsort and a scatter
    (half of scipy's stable-sort rankdata); rows with ties or NaN go to rankdata."""
    k, m = v.shape
    order = np.argsort(v, axis=-1)
    ranks = np.empty_like(v, dtype=np.float64)
    ranks[np.arange(k)[:, None], order] = np.arange(1.0, m + 1.0)
    s = np.take_along_axis(v, order, axis=-1)
    odd = (s[:, 1:] == s[:, :-1]).any(axis=-1) | np.isnan(s[:, -1])
    if odd.any():
        from scipy.stats import rankdata

        ranks[odd] = rankdata(v[odd], axis=-1)
    return ranks


def _rank(v: np.ndarray) -> np.ndarray:
    """scipy.stats.rankdata(v, axis=-1) as float64; row blocks on the CPU Gram's threads."""
    v = np.asarray(v)
    flat = v.reshape(-1, v.shape[-1]) if v.ndim != 2 else v
    workers = min(cpu_workers(), len(flat) // 8)
    if workers < 2 or threading.current_thread().name.startswith("gram"):  # no pool in pool
        out = _rank_rows(flat)
    else:
        blocks = np.array_split(np.arange(len(flat)), workers)
        out = np.concatenate(list(thread_pool(workers).map(lambda i: _rank_rows(flat[i]), blocks)))
    return out.reshape(v.shape)


def _cmp_pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return _centred_unit(a) @ _centred_unit(b).T


def _cmp_spearman(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return _cmp_pearson(_rank(a), _rank(b))


def _cmp_rho_a(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    n = a.shape[-1]
    ra = _rank(a)
    rb = _rank(b)
    ra -= ra.mean(-1, keepdims=True)
    rb -= rb.mean(-1, keepdims=True)
    return ra @ rb.T * (12.0 / (n**3 - n))


def _cmp_cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    na = a / np.linalg.norm(a, axis=-1, keepdims=True)
    nb = b / np.linalg.norm(b, axis=-1, keepdims=True)
    return na @ nb.T


def tau_a(x: np.ndarray, y: np.ndarray) -> float:
    """Kendall's tau-a of two vectors: (concordant - discordant) / (m(m-1)/2), from scipy's
    tau-b times its tie denominator over the total number of pairs."""
    m = len(x)
    tot = m * (m - 1) / 2

    def ties(v):
        c = np.unique(v, return_counts=True)[1].astype(np.float64)
        return (c * (c - 1) / 2).sum()

    from scipy.stats import kendalltau

    tb = kendalltau(x, y).statistic
    return float(np.clip(tb * np.sqrt((tot - ties(x)) * (tot - ties(y))) / tot, -1, 1))


#: largest (vectors x pairs^2) float64 block of the sign-product tau-a (else scipy per pair)
TAU_SIGN_BYTES = 1 << 28


def _signs(v: np.ndarray) -> np.ndarray:
    return np.sign(v[:, :, None] - v[:, None, :]).reshape(len(v), -1)


def _cmp_tau_a(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Kendall's tau-a of every row pair: for short vectors the sign products of all pairs
    of entries, sum_ij sign(a_i - a_j) sign(b_i - b_j) / (m(m-1)) (exact integer sums);
    otherwise scipy per comparison (O(m log m))."""
    m = a.shape[-1]
    if 8 * (len(b) + 1) * m * m <= TAU_SIGN_BYTES:
        sb = _signs(b)
        return np.concatenate([_signs(x[None]) @ sb.T for x in a]) / (m * (m - 1))
    return np.array([[tau_a(x, y) for y in b] for x in a]).reshape(len(a), len(b))


#: RDM comparators by name (rsatoolbox's names where they exist).
RDM_COMPARATORS: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "spearman": _cmp_spearman,
    "pearson": _cmp_pearson,
    "corr": _cmp_pearson,
    "rho-a": _cmp_rho_a,
    "cosine": _cmp_cosine,
    "tau-a": _cmp_tau_a,
}


def rsa(rdm_a, rdm_b, method: str = "spearman", min_fraction: float = 0.5):
    """Similarity of RDMs on the upper triangle: a float, or an (A, B) matrix for stacks.

    Inputs: square RDMs (n, n), stacks (k, n, n), vectors (pairs,) or stacks (k, pairs).
    method: spearman | pearson (alias corr) | rho-a | cosine | tau-a (whitened
    comparators: `compare.rdm_methods.compare_rdms`). Pairs that are NaN in either
    RDM of a comparison are dropped from that comparison; it is NaN when fewer than
    `min_fraction` of the pairs remain (degenerate representations).
    """
    a, single_a = _rdm_vectors(rdm_a)
    b, single_b = _rdm_vectors(rdm_b)
    out = _rsa_vectors(a, b, method, min_fraction)
    if single_a and single_b:
        return float(out[0, 0])
    return out


def _rsa_vectors(a: np.ndarray, b: np.ndarray, method: str, min_fraction: float) -> np.ndarray:
    """(A, B) comparisons of two stacks of upper-triangle vectors (float64)."""
    if method not in RDM_COMPARATORS:
        raise ValueError(f"unknown RSA method {method!r}; known: {sorted(RDM_COMPARATORS)}")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"RDMs differ in size: {a.shape[1]} vs {b.shape[1]} pairs")
    fn = RDM_COMPARATORS[method]
    fa, fb = np.isfinite(a), np.isfinite(b)
    if fa.all() and fb.all():
        out = fn(a, b)
    else:  # pairs that are NaN in either RDM of a comparison are dropped from that comparison
        out = np.full((len(a), len(b)), np.nan)
        for i in range(len(a)):
            for j in range(len(b)):
                ok = fa[i] & fb[j]
                if ok.sum() >= max(3, min_fraction * len(ok)):
                    out[i, j] = fn(a[i : i + 1, ok], b[j : j + 1, ok])[0, 0]
    return out
