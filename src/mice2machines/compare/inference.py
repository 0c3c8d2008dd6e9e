"""Chance levels and tests for model-versus-brain scores: permutation nulls, p, q.

The null hypothesis is that a model's layer carries no information about which image evoked
which neural response. Its null distribution comes from permuting the image labels of the
neural data (never the model's): ``permutations(n, n_perm, seed)`` draws them once per run, and
the same rows are used for every layer and every model, so that nulls are comparable and
p-values of one neural group are computed against the same relabellings.

- ``rsa_null``, ``cka_null``: (n_perm, groups, layers) scores with the neural RDM / Gram
  permuted, one matrix product per block of permutations.
- ``ridge_fold_scores``: cross-validated ridge scored per held-out fold and averaged (chance
  level 0, unlike predictions pooled over folds, ``ridge_pooled_scores``), with a relative
  alpha grid (independent of the activations' scale) and its permutation null, alpha re-chosen
  on every permuted training set.
- ``fold_scores``, ``permuted_columns``, ``unstack_null``: per-fold scores of any held-out
  prediction, and permuted responses stacked as extra cells, so that a streaming accumulator
  over units (one-to-one matching, RF-RMSE) computes the null of the same max over the same
  units in the same pass.
- ``p_values`` (p = (1 + #{null at least as good}) / (1 + n_perm)), ``null_summary``,
  ``bh_q`` (Benjamini-Hochberg across layers x groups), ``group_null_median``.

Everything is float64 and deterministic for a given seed. ``device``: "cpu" is numpy;
"cuda", "cuda:N" or "torch:cpu" runs the batched products in torch on that device.
"""

from __future__ import annotations

import warnings

import numpy as np

from .cka import centre_gram, u_centre_gram
from .rsa import _rank

#: bytes one block of permutations may use for its gathered copies (about 256 MB)
MAX_BLOCK_BYTES = 1 << 28

#: a relative ridge grid: each value times trace(K_train) / n_train is one penalty
RELATIVE_ALPHAS = tuple(float(10.0**k) for k in range(-4, 5))

_PERM_STREAM = 0x7065726D  # the permutations' own random stream, apart from folds/bootstrap


# --------------------------------------------------------------------------- backends


def _torch_device(device) -> str | None:
    """None for numpy ("cpu" or None), else the torch device ("torch:cpu" -> "cpu")."""
    if device is None or str(device) == "cpu":
        return None
    return str(device).removeprefix("torch:")


def _backend(device):
    """(array module, torch device or None) for `device`."""
    tdev = _torch_device(device)
    if tdev is None:
        return np, None
    import torch

    return torch, tdev


def _put(x, tdev, integer: bool = False):
    """x as float64 (int64 with `integer`): numpy, or a torch tensor on `tdev`."""
    x = np.ascontiguousarray(x, dtype=np.int64 if integer else np.float64)
    if tdev is None:
        return x
    import torch

    return torch.as_tensor(x, device=tdev)


def _host(x) -> np.ndarray:
    if hasattr(x, "detach"):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _check_perms(perms, n: int) -> np.ndarray:
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
    perms = _check_perms(perms, n)
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
    xp, tdev = _backend(device)
    ua_d, ubT = _put(ua, tdev), _put(ub.T, tdev)
    pair_d, iu_d, ju_d = (_put(x, tdev, integer=True) for x in (pair, iu, ju))
    G, L, P = len(a), len(b), len(perms)
    out = np.empty((P, G, L))
    step = max(1, MAX_BLOCK_BYTES // (8 * (G + 3) * m))
    for lo in range(0, P, step):
        pb = _put(perms[lo : lo + step], tdev, integer=True)
        idx = pair_d[pb[:, iu_d], pb[:, ju_d]]  # (block, pairs): where each permuted pair was
        prod = ua_d[:, idx].reshape(-1, m) @ ubT  # (G * block, L)
        out[lo : lo + len(pb)] = _host(xp.moveaxis(prod.reshape(G, len(pb), L), 1, 0))
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
    perms = _check_perms(perms, n)
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
    xp, tdev = _backend(device)
    A_d, BT = _put(A, tdev), _put(B.reshape(len(B), -1).T, tdev)
    G, L, P = len(A), len(B), len(perms)
    out = np.empty((P, G, L))
    step = max(1, MAX_BLOCK_BYTES // (8 * (G + 1) * n * n))
    for lo in range(0, P, step):
        pb = _put(perms[lo : lo + step], tdev, integer=True)
        gathered = A_d[:, pb[:, :, None], pb[:, None, :]]  # (G, block, n, n)
        prod = gathered.reshape(G * len(pb), n * n) @ BT
        out[lo : lo + len(pb)] = _host(xp.moveaxis(prod.reshape(G, len(pb), L), 1, 0))
    out[:, bad_a] = np.nan
    out[:, :, bad_b] = np.nan
    return out


# --------------------------------------------------------------------------- per-fold scores


def _pearson_cols(a, b, xp):
    """Pearson r between matching columns; NaN where either column is constant."""
    ac = a - a.mean(0)
    bc = b - b.mean(0)
    r = (ac * bc).sum(0) / xp.sqrt((ac * ac).sum(0) * (bc * bc).sum(0))
    const = (a == a[:1]).all(0) | (b == b[:1]).all(0)
    return xp.where(const, float("nan"), r)


def _fold_mean(fold_r: np.ndarray, fisher: bool) -> np.ndarray:
    """Mean over folds (axis 0) of the finite r, or tanh of the mean arctanh with `fisher`."""
    ok = np.isfinite(fold_r)
    with np.errstate(invalid="ignore", divide="ignore"):
        x = np.arctanh(fold_r) if fisher else fold_r
        mean = np.where(ok, x, 0.0).sum(0) / ok.sum(0)
    mean = np.where(ok.any(0), mean, np.nan)
    return np.tanh(mean) if fisher else mean


def fold_scores(prediction, Y, folds, fisher: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(score (cells,), fold_r (folds, cells)): r of held-out predictions on each fold's test
    images, averaged over folds (mean r; mean Fisher z back-transformed with `fisher`).

    Works for any cross-validated prediction (ridge, one-to-one matching, permuted copies from
    ``permuted_columns``). Folds whose r is undefined (a constant prediction or response on
    the held-out images) are left out of the mean.
    """
    pred = np.asarray(prediction, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    if pred.shape != Y.shape or Y.ndim != 2:
        raise ValueError(f"prediction {pred.shape} and Y {Y.shape} must be the same (n, cells)")
    with np.errstate(invalid="ignore", divide="ignore"):
        fold_r = np.stack([_pearson_cols(pred[te], Y[te], np) for _, te in folds])
    return _fold_mean(fold_r, fisher), fold_r


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
    perms = _check_perms(perms, Y.shape[0])
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


# --------------------------------------------------------------------------- ridge


def _centre_rows_to(K: np.ndarray, tr: np.ndarray) -> np.ndarray:
    """Gram (all, tr) of features centred on the training images' means."""
    a = K[:, tr].mean(1)
    c = a[tr].mean()
    return K[:, tr] - a[:, None] - a[tr][None, :] + c


def _fold_setup(K: np.ndarray, alphas: np.ndarray, tr, te) -> dict:
    """One fold's eigendecomposition and, per alpha, LOO weights and the penalties.

    With Q, s the eigenvectors and -values of the training-centred training Gram, the hat
    matrix with an unpenalised intercept is 11'/n + Q diag(s/(s+a)) Q', its residuals
    Q diag(a/(s+a)) Q' (y - ybar), and 1 - h_ii = (Q^2 a/(s+a))_i - 1/n. Eigenvalues below
    n * eps of the largest are rounding of zero and set to 0 (a relative clip: scale-free).
    """
    Kc = _centre_rows_to(K, tr)
    Ktr = Kc[tr]
    Ktr = (Ktr + Ktr.T) / 2
    nt = len(tr)
    s, Q = np.linalg.eigh(Ktr)
    top = max(float(s[-1]), 0.0)
    s = np.where(s > nt * np.finfo(np.float64).eps * top, s, 0.0)
    scale = float(np.trace(Ktr)) / nt
    a = alphas * scale if scale > 0 else alphas  # a zero Gram: any penalty, r is NaN
    keep = a[:, None] / (s[None, :] + a[:, None])  # (alphas, nt)
    one_minus_h = keep @ (Q * Q).T - 1.0 / nt  # (alphas, nt)
    return {
        "tr": tr,
        "te": te,
        "Q": Q,
        "Qt": np.ascontiguousarray(Q.T),
        "KteQ": Kc[te] @ Q,
        "keep": keep,
        "w": 1.0 / one_minus_h,
        "inv": 1.0 / (s[None, :] + a[:, None]),
        "alpha": a if scale > 0 else np.full_like(a, np.nan),
    }


def _fit_fold(fd: dict, ytr, yte, xp):
    """Ridge on one fold for every column of ytr (nt, C): (held-out r (C,), alpha index (C,),
    held-out prediction minus the training mean (n_te, C), training mean (C,))."""
    ybar = ytr.mean(0)
    Z = fd["Qt"] @ (ytr - ybar)
    err = xp.stack(  # (alphas, C): mean squared leave-one-out residual
        [
            (((fd["Q"] @ (keep[:, None] * Z)) * w[:, None]) ** 2).mean(0)
            for keep, w in zip(fd["keep"], fd["w"], strict=True)
        ]
    )
    idx = err.argmin(0)  # the first minimum, as scikit-learn
    dev = fd["KteQ"] @ (Z * fd["inv"][idx].T)
    dev = xp.where((ytr == ytr[:1]).all(0), 0.0, dev)
    return _pearson_cols(dev, yte, xp), idx, dev, ybar


def _ridge(K, Y, alphas, folds, perms, fisher: bool, device, pooled: bool) -> dict:
    K = np.asarray(K, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    alphas = np.atleast_1d(np.asarray(alphas, dtype=np.float64))
    n = len(K)
    if K.shape != (n, n) or Y.ndim != 2 or len(Y) != n:
        raise ValueError(f"expected K (n, n) and Y (n, cells), got {K.shape} and {Y.shape}")
    if not np.isfinite(K).all():
        raise ValueError("K must be finite")
    if alphas.ndim != 1 or not (alphas > 0).all():
        raise ValueError("alphas must be a 1-D grid of positive relative penalties")
    xp, tdev = _backend(device)
    fds = []
    for tr, te in folds:
        tr, te = np.asarray(tr, dtype=np.int64), np.asarray(te, dtype=np.int64)
        fd = _fold_setup(K, alphas, tr, te)
        fds.append(
            {k: v if k == "alpha" else _put(v, tdev, k in ("tr", "te")) for k, v in fd.items()}
        )
    n_cells = Y.shape[1]

    def run(cols, want_pred: bool):
        """(fold r (folds, C), alpha index (folds, C), held-out predictions (n, C) or None),
        on the host."""
        rs, idxs = [], []
        pred = np.full((n, cols.shape[1]), np.nan) if want_pred else None
        for fd in fds:
            r, idx, dev, ybar = _fit_fold(fd, cols[fd["tr"]], cols[fd["te"]], xp)
            rs.append(_host(r))
            idxs.append(_host(idx))
            if want_pred:
                pred[_host(fd["te"])] = _host(dev + ybar)
        return np.stack(rs), np.stack(idxs), pred

    def reduce(fold_r, pred, cols):
        if pooled:
            return _pearson_cols(pred, _host(cols), np)
        return _fold_mean(fold_r, fisher)

    per_col = 8 * (12 * n + len(alphas))  # bytes of a column and its temporaries
    cell_step = max(1, min(n_cells, MAX_BLOCK_BYTES // per_col))
    with np.errstate(invalid="ignore", divide="ignore"):
        Yd = _put(Y, tdev)
        blocks = [run(Yd[:, c0 : c0 + cell_step], True) for c0 in range(0, n_cells, cell_step)]
        fold_r, idx, pred = (np.concatenate(b, axis=1) for b in zip(*blocks, strict=True))
        train_ok = np.stack([np.isfinite(Y[_host(fd["tr"])]).all(0) for fd in fds])
        alpha = np.stack([fd["alpha"][i] for fd, i in zip(fds, idx, strict=True)])
        out = {
            "score": reduce(fold_r, pred, Yd),
            "fold_r": fold_r,
            "alpha": np.where(train_ok, alpha, np.nan),
            "prediction": pred,
        }
        if pooled:
            del out["fold_r"]
        if perms is None:
            return out
        perms = _check_perms(perms, n)
        P = len(perms)
        null = np.empty((P, n_cells))
        perm_step = max(1, MAX_BLOCK_BYTES // (per_col * cell_step))
        for c0 in range(0, n_cells, cell_step):
            Yc = Yd[:, c0 : c0 + cell_step]
            cb = Yc.shape[1]
            for p0 in range(0, P, perm_step):
                pb = _put(perms[p0 : p0 + perm_step], tdev, integer=True)
                cols = xp.moveaxis(Yc[pb], 0, 1).reshape(n, len(pb) * cb)
                fr, _, pr = run(cols, pooled)
                null[p0 : p0 + len(pb), c0 : c0 + cb] = reduce(fr, pr, cols).reshape(len(pb), cb)
        out["null"] = null
    return out


def ridge_fold_scores(
    K, Y, alphas, folds, perms=None, fisher: bool = False, device="cpu"
) -> dict[str, np.ndarray]:
    """Cross-validated ridge predictivity per cell, scored per held-out fold (chance level 0).

    K (n, n): a layer's linear Gram (column-centred as ``GramAccumulator.gram()``; each fold
    re-centres it on its training images); Y (n, cells) responses; alphas: a RELATIVE grid, fold penalty = alpha *
    trace(K_train) / n_train (K_train centred), so that rescaling the activations changes
    nothing. Per fold each cell's alpha is chosen on the training images by exact
    leave-one-out error (as RidgeCV(alpha_per_target=True)); the intercept is unpenalised.

    Returns ``score`` (cells,): the mean over folds of each fold's held-out Pearson r (with
    `fisher`, tanh of the mean arctanh; default mean r); ``fold_r`` (folds, cells); ``alpha``
    (folds, cells) chosen absolute penalties; ``prediction`` (n, cells) held-out predictions.
    With ``perms`` (n_perm, n), also ``null`` (n_perm, cells): the same procedure, alpha
    re-chosen on each permuted training set, applied to Y[perms[k]], as batched products over
    all permutations (the LOO residuals (I - H_a) y / (1 - h_a) are linear in y). A cell that
    is constant on a fold's training or test images gets NaN for that fold, which the mean
    leaves out. K must be finite; cells with non-finite responses give NaN.
    """
    return _ridge(K, Y, alphas, folds, perms, fisher, device, pooled=False)


def ridge_pooled_scores(K, Y, alphas, folds, perms=None, device="cpu") -> dict[str, np.ndarray]:
    """As ``ridge_fold_scores``, scored the old way: one r per cell of the predictions pooled
    over folds (no ``fold_r``).

    Biased below zero on data without signal (each fold's prediction leans on its training
    mean, which anticorrelates with the held-out responses: about -0.1 to -0.2 with 118 images
    and 5 folds); kept for comparison with earlier results, its permutation null included.
    """
    return _ridge(K, Y, alphas, folds, perms, False, device, pooled=True)
