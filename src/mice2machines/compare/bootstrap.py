"""Bootstrap over stimuli (and cells): resample indices, resampled scores, percentile intervals.

Every rule here is vectorised over the resamples, in blocks of at most ``devices.MAX_BLOCK_BYTES`` of
working memory, on the job's device: "cpu" is numpy; "cuda", "cuda:N" or "torch:cpu" runs
the blocks in torch (float64) on that device. A resample enters through its stimulus counts:
the kept stimulus pairs of a resample (no pair of a stimulus with its own copy) are the
original pairs {s, t}, each c_s c_t times, so RSA is a weighted correlation over the fixed
upper triangle, with Spearman's average ranks from cumulative weights along each RDM's own
sort order (computed once); CKA gathers and centres each block of resampled Gram matrices.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

from .. import devices
from ..devices import array_backend, put64, to_numpy
from .gram import Representations


def bootstrap_indices(n: int, n_boot: int, seed: int = 0) -> np.ndarray:
    """(n_boot, n) stimulus indices drawn with replacement (seeded)."""
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def resample_counts(indices: np.ndarray, n: int) -> np.ndarray:
    """(n_boot, n) float64 counts of each stimulus in each resample (row of ``indices``)."""
    idx = np.asarray(indices, dtype=np.int64)
    if idx.ndim != 2:
        raise ValueError(f"indices must be (n_boot, n), got shape {idx.shape}")
    if idx.size and (idx.min() < 0 or idx.max() >= n):
        raise ValueError(f"indices must lie in 0..{n - 1}")
    flat = (idx + n * np.arange(len(idx))[:, None]).ravel()
    return np.bincount(flat, minlength=len(idx) * n).reshape(len(idx), n).astype(np.float64)


def resampled_pairs(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Upper-triangle (row, column) entries of the stimulus pairs of one resample, without
    the pairs of a stimulus with its own copy."""
    i, j = np.triu_indices(len(idx), k=1)
    keep = idx[i] != idx[j]
    a, b = idx[i[keep]], idx[j[keep]]
    return np.minimum(a, b), np.maximum(a, b)


def resampled(reps: Representations, idx: np.ndarray) -> Representations:
    """Representations of the resampled stimuli ``idx`` (rows and columns of every matrix)."""
    named = None if reps.named is None else {k: v[:, idx][:, :, idx] for k, v in reps.named.items()}
    return Representations(
        reps.names, reps.grams[:, idx][:, :, idx], reps.rdms[:, idx][:, :, idx], named
    )


def _blocks(n_boot: int, per_resample_bytes: int):
    step = max(1, devices.MAX_BLOCK_BYTES // max(1, per_resample_bytes))
    return [slice(lo, min(lo + step, n_boot)) for lo in range(0, n_boot, step)]


def _sum(x, axis, xp, keep: bool = False):
    return x.sum(axis, keepdims=keep) if xp is np else x.sum(axis, keepdim=keep)


def _columns(x, idx, xp):
    """``x[:, idx]`` for a 2-D ``x`` and an integer array ``idx`` (np.take: 2x faster than
    fancy indexing or take_along_axis on the rank tables)."""
    return np.take(x, idx, axis=1) if xp is np else x[:, idx]


def _tie_bounds(v: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For rows v (R, m): each row's stable sort order, and per original entry the sorted
    position of the first entry of its tie group and one past its last (NaN: no ties)."""
    R, m = v.shape
    order = np.argsort(v, axis=1, kind="stable")
    s = np.take_along_axis(v, order, axis=1)
    pos = np.broadcast_to(np.arange(m), (R, m))
    new = np.ones((R, m), dtype=bool)
    new[:, 1:] = s[:, 1:] != s[:, :-1]
    last = np.ones((R, m), dtype=bool)
    last[:, :-1] = new[:, 1:]
    start = np.maximum.accumulate(np.where(new, pos, 0), axis=1)
    stop = np.minimum.accumulate(np.where(last, pos + 1, m)[:, ::-1], axis=1)[:, ::-1]
    inv = np.empty((R, m), dtype=np.int64)
    np.put_along_axis(inv, order, pos, axis=1)
    return order, np.take_along_axis(start, inv, 1), np.take_along_axis(stop, inv, 1)


def rsa_bootstrap(neural_rdms, model_rdms, indices, method: str = "spearman", device="cpu"):
    """(n_boot, G, L) RSA of resampled RDMs, the pairs of a stimulus with its own copy dropped
    (rsatoolbox's convention): per resample, as ``RDM_COMPARATORS[method]`` of the kept
    upper-triangle entries (``resampled_pairs``), for spearman (average ranks over the kept
    pairs) and pearson (alias corr). A NaN among a resample's kept pairs gives NaN.

    The kept pairs are the original pairs {s, t}, c_s c_t times (c: the resample's counts).
    Pearson: weighted sums, one product with the pair weights for all resamples of a block.
    Spearman: each RDM sorted once; a resample's average rank of a pair is the cumulative
    weight below its tie group plus half the group's weight (exact in float64), centred by
    the ranks' mean (k + 1) / 2 (k kept pairs); one batched product per block.
    """
    from .rsa import upper_tri

    if method not in ("spearman", "pearson", "corr"):
        raise ValueError(f"rsa_bootstrap: unknown method {method!r}")
    a = upper_tri(np.asarray(neural_rdms, dtype=np.float64))
    b = upper_tri(np.asarray(model_rdms, dtype=np.float64))
    n = np.asarray(neural_rdms).shape[-1]
    counts = resample_counts(indices, n)
    G, L, m = len(a), len(b), a.shape[1]
    X = np.concatenate([a, b])
    iu, ju = np.triu_indices(n, k=1)
    xp, tdev = array_backend(device)
    iu_d, ju_d = put64(iu, tdev, integer=True), put64(ju, tdev, integer=True)
    spearman = method == "spearman"
    nonfinite = np.isnan(X) if spearman else ~np.isfinite(X)
    nan_d = put64(nonfinite, tdev)
    out = np.empty((len(counts), G, L))
    if spearman:  # a pair's tie bounds as flat positions in its row of the (R, m + 1) sums
        order, lo_pos, hi_pos = _tie_bounds(X)
        row = (m + 1) * np.arange(len(X))[:, None]
        order, lo_pos, hi_pos = (
            put64(x, tdev, integer=True) for x in (order, lo_pos + row, hi_pos + row)
        )
        per_resample = 8 * 6 * (G + L) * m
    else:  # centred by the full sample's mean (less cancellation), non-finite entries zeroed
        Z = np.where(nonfinite, 0.0, X)
        Z = np.where(
            nonfinite,
            0.0,
            Z - Z.sum(1, keepdims=True) / np.maximum(1, (~nonfinite).sum(1, keepdims=True)),
        )
        Za, Zb = put64(Z[:G], tdev), put64(Z[G:], tdev)
        ZZ = put64(Z * Z, tdev)
        P = (Za[:, None, :] * Zb[None, :, :]).reshape(G * L, m)  # pair products
        per_resample = 8 * (2 * m + 3 * G * L)
    for blk in _blocks(len(counts), per_resample):
        C = put64(counts[blk], tdev)
        W = C[:, iu_d] * C[:, ju_d]  # (B, m): how often each pair is kept
        k = _sum(W, -1, xp)[:, None]  # (B, 1) kept pairs
        kept = (W > 0) * 1.0 if xp is np else (W > 0).to(W.dtype)
        bad = (kept @ nan_d.T) > 0  # (B, R): a NaN among the kept pairs
        bad = bad | (_sum(kept, -1, xp) < 2)[:, None]  # one distinct pair: constant, no r
        if spearman:  # (S + E + 1) / 2 - (k + 1) / 2, S / E: cumulative weight to the group
            cs = xp.cumsum(_columns(W, order, xp), -1)  # (B, R, m)
            zero = cs[..., :1] * 0
            cs = xp.concatenate([zero, cs], -1) if xp is np else xp.cat([zero, cs], -1)
            cs = cs.reshape(len(cs), -1)
            V = _columns(cs, lo_pos, xp) + _columns(cs, hi_pos, xp)
            V = (V - k[:, :, None]) / 2
            VW = V[:, :G] * W[:, None, :]
            cross = VW @ xp.swapaxes(V[:, G:], -1, -2)
            va = _sum(VW * V[:, :G], -1, xp)
            vb = _sum(V[:, G:] * V[:, G:] * W[:, None, :], -1, xp)
        else:
            sa, sb = W @ Za.T, W @ Zb.T
            sq = W @ ZZ.T
            va = sq[:, :G] - sa * sa / k
            vb = sq[:, G:] - sb * sb / k
            cross = (W @ P.T).reshape(-1, G, L) - sa[:, :, None] * sb[:, None, :] / k[:, :, None]
        with np.errstate(invalid="ignore", divide="ignore"):
            prod = cross / xp.sqrt(va[:, :, None] * vb[:, None, :])
        prod = xp.where(bad[:, :G, None] | bad[:, None, G:], float("nan"), prod)
        out[blk] = to_numpy(prod)
    return out


def _pre_centred(K: np.ndarray) -> np.ndarray:
    """H K H over the full sample: the resampled (u-)centred Gram matrices do not change
    (K - a 1' - 1 a' for a symmetric shift), their sums cancel less."""
    return (
        K - K.mean(-1, keepdims=True) - K.mean(-2, keepdims=True) + K.mean((-2, -1), keepdims=True)
    )


def cka_bootstrap(neural_grams, model_grams, indices, unbiased: bool = True, device="cpu"):
    """(n_boot, G, L) linear CKA (``cka_from_grams``) of the Gram matrices of each resample
    (rows and columns ``indices[b]``), from the resample's stimulus counts c.

    With K~ the resampled Gram (N stimuli): tr(K~L~) = sum_st c_s c_t K_st L_st (one product
    of the counts' outer products with the Grams' entrywise products, for all resamples of a
    block), 1'K~L~1 = sum_s c_s (Kc)_s (Lc)_s, 1'K~1 = c'Kc; the biased HSIC is
    tr(K~L~) - 2/N 1'K~L~1 + (1'K~1)(1'L~1)/N^2, the unbiased one (Song et al. 2012) the same
    of K~ with its diagonal zeroed (K_ss removed once per draw of s), as ``u_centre_gram``'s
    inner product. A non-finite entry among a resample's drawn pairs gives NaN.
    """
    K = np.asarray(neural_grams, dtype=np.float64)
    M = np.asarray(model_grams, dtype=np.float64)
    n = K.shape[-1]
    indices = np.asarray(indices, dtype=np.int64)
    N = indices.shape[1] if indices.ndim == 2 else n
    if unbiased and N < 4:
        raise ValueError("unbiased HSIC needs at least 4 stimuli")
    counts = resample_counts(indices, n)
    G, L = len(K), len(M)
    X = np.concatenate([K, M])
    nonfinite = ~np.isfinite(X)
    X = _pre_centred(np.where(nonfinite, 0.0, X))
    xp, tdev = array_backend(device)
    flat = X.reshape(G + L, n * n)
    Kf, Mf = put64(flat[:G], tdev), put64(flat[G:], tdev)
    XX = put64(flat * flat, tdev)  # (R, n^2): the self products
    X_d = put64(X.reshape((G + L) * n, n), tdev)
    diag = put64(np.diagonal(X, axis1=1, axis2=2), tdev)  # (R, n)
    bad_d = put64(nonfinite.reshape(G + L, n * n), tdev)
    out = np.empty((len(counts), G, L))
    Lc = max(1, min(L, devices.MAX_BLOCK_BYTES // (8 * G * n * n)))  # layers per pair-product chunk
    for l0 in range(0, L, Lc):
        l1 = min(L, l0 + Lc)
        P = (Kf[:, None, :] * Mf[None, l0:l1, :]).reshape(G * (l1 - l0), n * n)
        for blk in _blocks(len(counts), 8 * (2 * n * n + 4 * (G + L) * n + 2 * G * L)):
            C = put64(counts[blk], tdev)
            B = len(C)
            CC = (C[:, :, None] * C[:, None, :]).reshape(B, n * n)
            T = (CC @ P.T).reshape(B, G, l1 - l0)  # tr(K~ L~)
            T2 = CC @ XX.T  # (B, R): tr(K~ K~)
            Kc = (C @ X_d.T).reshape(B, G + L, n)  # K c per row
            if unbiased:
                T = T - (C[:, None, :] * diag[None, :G]) @ diag[G + l0 : G + l1].T
                T2 = T2 - C @ (diag * diag).T
                Kc = Kc - diag[None]
            S = _sum(C[:, None, :] * Kc, -1, xp)  # (B, R): 1'K~1 (diagonal removed)
            Ck = C[:, None, :] * Kc[:, :G]
            Q = Ck @ xp.swapaxes(Kc[:, G + l0 : G + l1], -1, -2)  # 1'K~L~1
            Q2 = _sum(C[:, None, :] * Kc * Kc, -1, xp)
            if unbiased:
                a, c2 = 1.0 / ((N - 1) * (N - 2)), 2.0 / (N - 2)
            else:
                a, c2 = 1.0 / N**2, 2.0 / N
            num = T + a * S[:, :G, None] * S[:, None, G + l0 : G + l1] - c2 * Q
            self_ = T2 + a * S * S - c2 * Q2  # (B, R)
            with np.errstate(invalid="ignore", divide="ignore"):
                r = num / xp.sqrt(self_[:, :G, None] * self_[:, None, G + l0 : G + l1])
            bad = (CC @ bad_d.T) > 0  # (B, R)
            r = xp.where(bad[:, :G, None] | bad[:, None, G + l0 : G + l1], float("nan"), r)
            out[blk, :, l0:l1] = to_numpy(r)
    return out


def bootstrap_representation(
    neural: Representations,
    model: Representations,
    metrics: Sequence[str],
    indices: np.ndarray,
    device="cpu",
) -> dict:
    """{metric: (n_boot, A, B)} representation metrics over resampled stimuli.

    Each metric's own ``bootstrap`` rule scores all resamples at once (``(neural, model,
    indices, device)``; RSA drops the pairs of a stimulus with its own copy); without one,
    each resample's Gram matrices and RDMs are rescored.
    """
    from .registry import get_metric

    specs = [get_metric(m) for m in metrics]
    for spec in specs:
        if spec.kind != "representation":
            raise ValueError(f"{spec.name!r} is not a representation metric")
    indices = np.asarray(indices, dtype=np.int64).reshape(-1, len(neural.grams[0]))
    shape = (len(indices), len(neural.names), len(model.names))
    out = {}
    for spec in specs:
        if spec.bootstrap is not None:
            out[spec.name] = np.asarray(spec.bootstrap(neural, model, indices, device))
        else:
            out[spec.name] = np.empty(shape)
            for b, idx in enumerate(indices):
                out[spec.name][b] = spec.score(resampled(neural, idx), resampled(model, idx))
        if out[spec.name].shape != shape:
            raise ValueError(f"{spec.name}: bootstrap gave {out[spec.name].shape}, not {shape}")
    return out


def _counted_r(pred, obs, C, xp):
    """(cells, B) r of pred vs obs (cells, m) with stimulus counts C (m, B); NaN for a
    resample with fewer than two distinct stimuli (r undefined; the formula's rounding
    noise otherwise)."""
    pred = pred - _sum(pred, 1, xp, keep=True) / pred.shape[1]
    obs = obs - _sum(obs, 1, xp, keep=True) / obs.shape[1]
    w = _sum(C, 0, xp)
    sp, so = pred @ C, obs @ C
    spp, soo, spo = (pred * pred) @ C, (obs * obs) @ C, (pred * obs) @ C
    with np.errstate(invalid="ignore", divide="ignore"):
        cov = spo - sp * so / w
        r = cov / xp.sqrt((spp - sp**2 / w) * (soo - so**2 / w))
    return xp.where(_sum((C > 0) * 1, 0, xp) >= 2, r, float("nan"))


def bootstrap_cell_r(pred: np.ndarray, obs: np.ndarray, indices: np.ndarray, device="cpu"):
    """(n_boot, cells) Pearson r of predictions vs observations over resampled stimuli.

    pred, obs: (cells, stimuli). Uses stimulus counts and five matrix products, so cost does not
    grow with repeated sampling of the same stimulus.
    """
    pred = np.asarray(pred, dtype=np.float64)
    obs = np.asarray(obs, dtype=np.float64)
    counts = resample_counts(indices, pred.shape[1])
    xp, tdev = array_backend(device)
    p_d, o_d = put64(pred, tdev), put64(obs, tdev)
    out = np.empty((len(counts), len(pred)))
    for blk in _blocks(len(counts), 8 * 10 * len(pred)):
        out[blk] = to_numpy(_counted_r(p_d, o_d, put64(counts[blk].T, tdev), xp)).T
    return out


def bootstrap_fold_r(
    pred: np.ndarray,
    obs: np.ndarray,
    folds,
    indices: np.ndarray,
    fisher: bool = False,
    device="cpu",
) -> np.ndarray:
    """(n_boot, cells) fold-averaged r over resampled stimuli: each fold's held-out stimuli
    as drawn in the resample (with their multiplicities), r per fold, then the mean over the
    folds as the score takes it (mean r, or mean Fisher z with ``fisher``)."""
    pred = np.asarray(pred, dtype=np.float64)
    obs = np.asarray(obs, dtype=np.float64)
    counts = resample_counts(indices, pred.shape[1])
    xp, tdev = array_backend(device)
    tests = [np.asarray(te) for _, te in folds]
    parts = [(put64(pred[:, te], tdev), put64(obs[:, te], tdev)) for te in tests]
    out = np.empty((len(counts), len(pred)))
    for blk in _blocks(len(counts), 8 * (10 + 2 * len(tests)) * len(pred)):
        total = count = None
        for te, (p_d, o_d) in zip(tests, parts, strict=True):
            r = _counted_r(p_d, o_d, put64(counts[blk][:, te].T, tdev), xp)
            ok = xp.isfinite(r)
            with np.errstate(invalid="ignore", divide="ignore"):
                x = xp.arctanh(xp.clip(r, -1, 1)) if fisher else r
            x = xp.where(ok, x, 0.0)
            okf = ok * 1.0 if xp is np else ok.to(r.dtype)
            total = x if total is None else total + x
            count = okf if count is None else count + okf
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = total / count
        mean = xp.tanh(mean) if fisher else mean
        out[blk] = to_numpy(xp.where(count > 0, mean, float("nan"))).T
    return out


def percentile_ci(samples: np.ndarray, level: float = 0.95, axis: int = 0, estimate=None):
    """(low, high) percentile interval of bootstrap samples along `axis`, NaNs ignored.

    With `estimate`, the interval is the spread of the samples around their median, placed on
    the estimate (estimate + percentiles of samples - median): resampling stimuli with
    replacement duplicates some and biases similarity upwards, which this removes.
    """
    q = 100 * (1 - level) / 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        lo, med, hi = np.nanpercentile(samples, [q, 50, 100 - q], axis=axis)
    if estimate is None:
        return lo, hi
    return estimate + lo - med, estimate + hi - med


def cell_bootstrap_ci(
    values: np.ndarray, membership: np.ndarray, n_boot: int, seed: int, level: float
) -> tuple[np.ndarray, np.ndarray]:
    """(groups,) percentile CI of the group median over cells resampled with replacement."""
    rng = np.random.default_rng(seed)
    lo = np.full(len(membership), np.nan)
    hi = np.full(len(membership), np.nan)
    for g, m in enumerate(membership):
        v = values[m]
        v = v[np.isfinite(v)]
        if len(v) == 0 or n_boot == 0:
            continue
        meds = np.median(v[rng.integers(0, len(v), (n_boot, len(v)))], axis=1)
        lo[g], hi[g] = percentile_ci(meds, level)
    return lo, hi
