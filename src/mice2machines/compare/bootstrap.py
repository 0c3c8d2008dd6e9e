"""Bootstrap over stimuli (and cells): resample indices, resampled scores, percentile intervals.

Every rule here is vectorised over the resamples, in blocks of at most ``MAX_BLOCK_BYTES`` of
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

from .gram import Representations
from .inference import MAX_BLOCK_BYTES, _backend, _host, _put


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
    return Representations(reps.names, reps.grams[:, idx][:, :, idx], reps.rdms[:, idx][:, :, idx])


def _blocks(n_boot: int, per_resample_bytes: int):
    step = max(1, MAX_BLOCK_BYTES // max(1, per_resample_bytes))
    return [slice(lo, min(lo + step, n_boot)) for lo in range(0, n_boot, step)]


def _sum(x, axis, xp, keep: bool = False):
    return x.sum(axis, keepdims=keep) if xp is np else x.sum(axis, keepdim=keep)


def _along(x, idx, axis, xp):
    return np.take_along_axis(x, idx, axis) if xp is np else xp.take_along_dim(x, idx, axis)


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
    pairs) and pearson (alias corr). A NaN among a resample's kept pairs gives NaN."""
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
    xp, tdev = _backend(device)
    iu_d, ju_d = _put(iu, tdev, integer=True), _put(ju, tdev, integer=True)
    spearman = method == "spearman"
    if spearman:
        order, lo_pos, hi_pos = (_put(x, tdev, integer=True) for x in _tie_bounds(X))
        nan_d = _put(np.isnan(X), tdev)
    else:
        X_d = _put(X, tdev)
    out = np.empty((len(counts), G, L))
    for blk in _blocks(len(counts), 8 * 8 * (G + L) * m):
        C = _put(counts[blk], tdev)
        W = C[:, iu_d] * C[:, ju_d]  # (B, m): how often each pair is kept
        keep = (W > 0)[:, None, :]
        if spearman:  # average ranks from the cumulative weights in each row's sort order
            cs = xp.cumsum(W[:, order], -1)  # (B, R, m)
            zero = cs[..., :1] * 0
            cs = xp.concatenate([zero, cs], -1) if xp is np else xp.cat([zero, cs], -1)
            V = (_along(cs, lo_pos[None], -1, xp) + _along(cs, hi_pos[None], -1, xp) + 1) / 2
            kept = (W > 0) * 1.0 if xp is np else (W > 0).to(W.dtype)
            bad = (kept @ nan_d.T) > 0  # (B, R): a NaN among the kept pairs
        else:
            V = X_d[None]
        V = xp.where(keep, V, 0.0)
        Wsum = _sum(W, -1, xp)[:, None, None]
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = _sum(V * W[:, None, :], -1, xp, keep=True) / Wsum
            Vc = xp.where(keep, V - mean, 0.0)
            norm = xp.sqrt(_sum(Vc * Vc * W[:, None, :], -1, xp, keep=True))
            U = Vc / norm
        prod = (U[:, :G] * W[:, None, :]) @ xp.swapaxes(U[:, G:], -1, -2)
        if spearman:
            prod = xp.where(bad[:, :G, None] | bad[:, None, G:], float("nan"), prod)
        out[blk] = _host(prod)
    return out


def _centred(K, unbiased: bool, xp, eye):
    """Double-centred (or u-centred) Gram matrices along the last two axes, as ``cka``'s."""
    n = K.shape[-1]
    if not unbiased:
        row = _sum(K, -1, xp, keep=True) / n
        col = _sum(K, -2, xp, keep=True) / n
        tot = _sum(_sum(K, -1, xp, keep=True), -2, xp, keep=True) / (n * n)
        return K - row - col + tot
    K = xp.where(eye, 0.0, K)
    row = _sum(K, -1, xp, keep=True) / (n - 2)
    col = _sum(K, -2, xp, keep=True) / (n - 2)
    tot = _sum(_sum(K, -1, xp, keep=True), -2, xp, keep=True) / ((n - 1) * (n - 2))
    U = K - row - col + tot
    return xp.where(eye, 0.0, U)


def cka_bootstrap(neural_grams, model_grams, indices, unbiased: bool = True, device="cpu"):
    """(n_boot, G, L) linear CKA (``cka_from_grams``) of the Gram matrices of each resample
    (rows and columns ``indices[b]``); each block of resamples is one gather, one centring
    and one batched product."""
    K = np.asarray(neural_grams, dtype=np.float64)
    M = np.asarray(model_grams, dtype=np.float64)
    n = K.shape[-1]
    if unbiased and n < 4:
        raise ValueError("unbiased HSIC needs at least 4 stimuli")
    indices = np.asarray(indices, dtype=np.int64)
    G, L = len(K), len(M)
    xp, tdev = _backend(device)
    X = _put(np.concatenate([K, M]), tdev)
    eye = np.eye(n, dtype=bool) if xp is np else xp.eye(n, dtype=xp.bool, device=tdev)
    out = np.empty((len(indices), G, L))
    for blk in _blocks(len(indices), 8 * 5 * (G + L) * n * n):
        ib = _put(indices[blk], tdev, integer=True)
        Kb = X[:, ib[:, :, None], ib[:, None, :]]  # (R, B, n, n)
        A = _centred(Kb, unbiased, xp, eye).reshape(G + L, len(ib), n * n)
        A = xp.swapaxes(A, 0, 1)  # (B, R, n^2)
        num = A[:, :G] @ xp.swapaxes(A[:, G:], -1, -2)
        sq = _sum(A * A, -1, xp)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[blk] = _host(num / xp.sqrt(sq[:, :G, None] * sq[:, None, G:]))
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
    xp, tdev = _backend(device)
    p_d, o_d = _put(pred, tdev), _put(obs, tdev)
    out = np.empty((len(counts), len(pred)))
    for blk in _blocks(len(counts), 8 * 10 * len(pred)):
        out[blk] = _host(_counted_r(p_d, o_d, _put(counts[blk].T, tdev), xp)).T
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
    xp, tdev = _backend(device)
    tests = [np.asarray(te) for _, te in folds]
    parts = [(_put(pred[:, te], tdev), _put(obs[:, te], tdev)) for te in tests]
    out = np.empty((len(counts), len(pred)))
    for blk in _blocks(len(counts), 8 * (10 + 2 * len(tests)) * len(pred)):
        total = count = None
        for te, (p_d, o_d) in zip(tests, parts, strict=True):
            r = _counted_r(p_d, o_d, _put(counts[blk][:, te].T, tdev), xp)
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
        out[blk] = _host(xp.where(count > 0, mean, float("nan"))).T
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
