"""Cross-validated kernel ridge from a layer's Gram matrix: one eigendecomposition per fold,
each cell's penalty chosen by exact leave-one-out error on the training images.

``ridge_fold_scores`` is the metric: held-out r per fold, averaged (chance level 0), with a
relative penalty grid (alpha x trace(K_train) / n_train, so that the activations' scale
changes nothing) and its permutation null, alpha re-chosen on every permuted training set, in
batched products (the LOO residuals (I - H_a) y / (1 - h_a) are linear in y).
``ridge_pooled_scores`` scores predictions pooled over folds (biased below 0, for comparison);
``ridge_cv`` and ``ridge_predictivity`` are the plain forms with absolute penalties, as
scikit-learn's RidgeCV(alpha_per_target=True).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .. import devices
from ..devices import array_backend, put64, to_numpy
from .crossval import fold_mean, kfold, pearson_cols

#: a relative ridge grid: each value times trace(K_train) / n_train is one penalty
RELATIVE_ALPHAS = tuple(float(10.0**k) for k in range(-4, 5))

__all__ = [
    "RELATIVE_ALPHAS",
    "kfold",
    "ridge_cv",
    "ridge_fold_scores",
    "ridge_pooled_scores",
    "ridge_predictivity",
]


def _centre_rows_to(K: np.ndarray, tr: np.ndarray) -> np.ndarray:
    """Gram (all, tr) of features centred on the training images' means."""
    a = K[:, tr].mean(1)
    c = a[tr].mean()
    return K[:, tr] - a[:, None] - a[tr][None, :] + c


def _fold_setup(K: np.ndarray, alphas: np.ndarray, tr, te, relative: bool) -> dict:
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
    s, Q = devices.small_eigh(Ktr)
    top = max(float(s[-1]), 0.0)
    s = np.where(s > nt * np.finfo(np.float64).eps * top, s, 0.0)
    scale = float(np.trace(Ktr)) / nt if relative else 1.0
    a = alphas * scale if scale > 0 else alphas  # a zero Gram: any penalty, r is NaN
    keep = a[:, None] / (s[None, :] + a[:, None])  # (alphas, nt)
    one_minus_h = keep @ (Q * Q).T - 1.0 / nt  # (alphas, nt)
    w = 1.0 / one_minus_h
    return {
        "tr": tr,
        "te": te,
        "Qt": np.ascontiguousarray(Q.T),
        "KteQ": Kc[te] @ Q,
        "loo": (w[:, :, None] * Q[None] * keep[:, None, :]).reshape(len(a) * nt, nt),
        "inv": 1.0 / (s[None, :] + a[:, None]),
        "alpha": a if scale > 0 else np.full_like(a, np.nan),
    }


def _loo_error(loo, Z, xp):
    """(alphas, C) mean squared leave-one-out residual for every penalty in one matrix
    product: ``loo`` stacks the alphas' diag(w_a) Q diag(keep_a), so the residuals of
    penalty a are rows a * nt to (a + 1) * nt of ``loo @ Z``."""
    nt, c = Z.shape
    R = loo @ Z
    R *= R
    return xp.reshape(R, (loo.shape[0] // nt, nt, c)).mean(1)


def _fit_fold(fd: dict, ytr, yte, xp):
    """Ridge on one fold for every column of ytr (nt, C): (held-out r (C,), alpha index (C,),
    held-out prediction minus the training mean (n_te, C), training mean (C,))."""
    ybar = ytr.mean(0)
    Z = fd["Qt"] @ (ytr - ybar)
    err = _loo_error(fd["loo"], Z, xp)
    idx = err.argmin(0)  # the first minimum, as scikit-learn
    dev = fd["KteQ"] @ (Z * fd["inv"][idx].T)
    dev = xp.where((ytr == ytr[:1]).all(0), 0.0, dev)
    return pearson_cols(dev, yte, xp), idx, dev, ybar


class _Engine:
    """The folds of one Gram on one device, applied to blocks of response columns."""

    def __init__(self, K, alphas, folds, device, relative: bool):
        K = np.asarray(K, dtype=np.float64)
        alphas = np.atleast_1d(np.asarray(alphas, dtype=np.float64))
        n = len(K)
        if K.shape != (n, n):
            raise ValueError(f"expected K (n, n), got {K.shape}")
        if not np.isfinite(K).all():
            raise ValueError("K must be finite")
        if alphas.ndim != 1 or not (alphas > 0).all():
            raise ValueError("alphas must be a 1-D grid of positive penalties")
        self.n, self.n_alphas = n, len(alphas)
        self.xp, self.tdev = array_backend(device)
        self.folds = []
        for tr, te in folds:
            tr, te = np.asarray(tr, dtype=np.int64), np.asarray(te, dtype=np.int64)
            fd = _fold_setup(K, alphas, tr, te, relative)
            self.folds.append(
                {
                    k: v if k == "alpha" else put64(v, self.tdev, k in ("tr", "te"))
                    for k, v in fd.items()
                }
            )

    @property
    def column_bytes(self) -> int:
        """Bytes one response column and its temporaries take."""
        return 8 * (12 * self.n + self.n_alphas * (self.n + 1))

    def run(self, cols, want_pred: bool):
        """(fold r (folds, C), alpha index (folds, C), held-out predictions (n, C) or None),
        on the host."""
        rs, idxs = [], []
        pred = np.full((self.n, cols.shape[1]), np.nan) if want_pred else None
        for fd in self.folds:
            r, idx, dev, ybar = _fit_fold(fd, cols[fd["tr"]], cols[fd["te"]], self.xp)
            rs.append(to_numpy(r))
            idxs.append(to_numpy(idx))
            if want_pred:
                pred[to_numpy(fd["te"])] = to_numpy(dev + ybar)
        return np.stack(rs), np.stack(idxs), pred


def _ridge(K, Y, alphas, folds, perms, fisher: bool, device, pooled: bool, relative: bool):
    Y = np.asarray(Y, dtype=np.float64)
    eng = _Engine(K, alphas, folds, device, relative)
    n = eng.n
    if Y.ndim != 2 or len(Y) != n:
        raise ValueError(f"expected Y ({n}, cells), got {Y.shape}")

    def reduce(fold_r, pred, cols):
        return pearson_cols(pred, to_numpy(cols)) if pooled else fold_mean(fold_r, fisher)

    n_cells = Y.shape[1]
    cell_step = max(1, min(n_cells, devices.MAX_BLOCK_BYTES // eng.column_bytes))
    with np.errstate(invalid="ignore", divide="ignore"):
        Yd = put64(Y, eng.tdev)
        blocks = [eng.run(Yd[:, c : c + cell_step], True) for c in range(0, n_cells, cell_step)]
        fold_r, idx, pred = (np.concatenate(b, axis=1) for b in zip(*blocks, strict=True))
        train_ok = np.stack([np.isfinite(Y[to_numpy(fd["tr"])]).all(0) for fd in eng.folds])
        alpha = np.stack([fd["alpha"][i] for fd, i in zip(eng.folds, idx, strict=True)])
        out = {
            "score": reduce(fold_r, pred, Yd),
            "fold_r": fold_r,
            "alpha": np.where(train_ok, alpha, np.nan),
            "alpha_index": idx,
            "prediction": pred,
        }
        if pooled:
            del out["fold_r"]
        if perms is not None:
            out["null"] = _null(eng, Yd, perms, cell_step, pooled, reduce)
    return out


def _null(eng: _Engine, Yd, perms, cell_step: int, pooled: bool, reduce) -> np.ndarray:
    """(n_perm, cells): the same fits on Y[perms[k]], blocks of permutations x cells batched."""
    from .inference import check_perms

    perms = check_perms(perms, eng.n)
    P, n_cells = len(perms), Yd.shape[1]
    null = np.empty((P, n_cells))
    perm_step = max(1, devices.MAX_BLOCK_BYTES // (eng.column_bytes * cell_step))
    for c0 in range(0, n_cells, cell_step):
        Yc = Yd[:, c0 : c0 + cell_step]
        cb = Yc.shape[1]
        for p0 in range(0, P, perm_step):
            pb = put64(perms[p0 : p0 + perm_step], eng.tdev, integer=True)
            cols = eng.xp.moveaxis(Yc[pb], 0, 1).reshape(eng.n, len(pb) * cb)
            fr, _, pr = eng.run(cols, pooled)
            null[p0 : p0 + len(pb), c0 : c0 + cb] = reduce(fr, pr, cols).reshape(len(pb), cb)
    return null


def ridge_fold_scores(
    K, Y, alphas, folds, perms=None, fisher: bool = False, device="cpu"
) -> dict[str, np.ndarray]:
    """Cross-validated ridge predictivity per cell, scored per held-out fold (chance level 0).

    K (n, n): a layer's linear Gram (column-centred as ``GramAccumulator.gram()``; each fold
    re-centres it on its training images); Y (n, cells) responses; alphas: a RELATIVE grid,
    fold penalty = alpha * trace(K_train) / n_train (K_train centred), so that rescaling the
    activations changes nothing. Per fold each cell's alpha is chosen on the training images
    by exact leave-one-out error (as RidgeCV(alpha_per_target=True)); the intercept is
    unpenalised.

    Returns ``score`` (cells,): the mean over folds of each fold's held-out Pearson r (with
    `fisher`, tanh of the mean arctanh; default mean r); ``fold_r`` (folds, cells); ``alpha``
    (folds, cells) chosen absolute penalties and ``alpha_index`` their grid index;
    ``prediction`` (n, cells) held-out predictions. With ``perms`` (n_perm, n), also ``null``
    (n_perm, cells): the same procedure applied to Y[perms[k]]. A cell that is constant on a
    fold's training or test images gets NaN for that fold, which the mean leaves out. K must
    be finite; cells with non-finite responses give NaN.
    """
    return _ridge(K, Y, alphas, folds, perms, fisher, device, pooled=False, relative=True)


def ridge_pooled_scores(K, Y, alphas, folds, perms=None, device="cpu") -> dict[str, np.ndarray]:
    """As ``ridge_fold_scores``, scored the old way: one r per cell of the predictions pooled
    over folds (no ``fold_r``).

    Biased below zero on data without signal (each fold's prediction leans on its training
    mean, which anticorrelates with the held-out responses: about -0.1 to -0.2 with 118 images
    and 5 folds); kept for comparison with earlier results, its permutation null included.
    """
    return _ridge(K, Y, alphas, folds, perms, False, device, pooled=True, relative=True)


def ridge_cv(
    K: np.ndarray,
    Y: np.ndarray,
    alphas: Sequence[float],
    folds: Sequence[tuple[np.ndarray, np.ndarray]],
) -> tuple[np.ndarray, np.ndarray]:
    """Cross-validated ridge predictions of Y (stimuli, cells) from a linear Gram K (n, n) with
    ABSOLUTE penalties, as scikit-learn's RidgeCV(alpha_per_target=True) fitted per fold.

    Returns (predictions (stimuli, cells), each from the fold that held the stimulus out;
    chosen alpha index (folds, cells)).
    """
    out = _ridge(K, Y, alphas, folds, None, False, "cpu", pooled=True, relative=False)
    return out["prediction"], out["alpha_index"]


def ridge_predictivity(
    X, Y, alphas: Sequence[float] = tuple(10.0 ** np.arange(-2, 7)), n_folds: int = 5, seed: int = 0
) -> np.ndarray:
    """Per-cell Pearson r of cross-validated ridge predictions of Y (stimuli, cells) from X,
    pooled over folds, with absolute penalties (the plain textbook form)."""
    X = np.asarray(X, dtype=np.float64)
    Xc = X - X.mean(0)
    pred, _ = ridge_cv(Xc @ Xc.T, Y, alphas, kfold(len(X), n_folds, seed))
    return pearson_cols(pred, np.asarray(Y, dtype=np.float64))
