"""Cross-validated ridge predictivity from a layer's Gram matrix (kernel form, one
eigendecomposition per fold, leave-one-out choice of alpha per neuron)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..neural.reliability import pearson_rows


def kfold(n: int, n_folds: int = 5, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Seeded K-fold (train, test) stimulus indices, every stimulus tested exactly once."""
    if not 2 <= n_folds <= n:
        raise ValueError(f"n_folds must be in 2..{n}, got {n_folds}")
    perm = np.random.default_rng(seed).permutation(n)
    folds = np.array_split(perm, n_folds)
    return [
        (np.sort(np.concatenate(folds[:k] + folds[k + 1 :])), np.sort(folds[k]))
        for k in range(n_folds)
    ]


def _centre_rows_to(K: np.ndarray, tr: np.ndarray) -> np.ndarray:
    """Gram (all, tr) of features centred on the training stimuli' means."""
    a = K[:, tr].mean(1)
    c = a[tr].mean()
    return K[:, tr] - a[:, None] - a[tr][None, :] + c


def ridge_cv(
    K: np.ndarray,
    Y: np.ndarray,
    alphas: Sequence[float],
    folds: Sequence[tuple[np.ndarray, np.ndarray]],
    cell_block: int = 2048,
) -> tuple[np.ndarray, np.ndarray]:
    """Cross-validated ridge predictions of Y (stimuli, cells) from a linear Gram K (n, n).

    Per fold the intercept is unpenalised, and each cell's alpha is chosen from `alphas` by
    exact leave-one-out error on the training stimuli (as scikit-learn's RidgeCV with
    alpha_per_target=True); the closed form uses one eigendecomposition of the training Gram.
    Returns (predictions (stimuli, cells) for each stimulus from the fold that held it out,
    chosen alpha index (folds, cells)).
    """
    K = np.asarray(K, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    alphas = np.asarray(alphas, dtype=np.float64)
    pred = np.full(Y.shape, np.nan)
    chosen = np.zeros((len(folds), Y.shape[1]), dtype=np.int64)
    for f, (tr, te) in enumerate(folds):
        Kc = _centre_rows_to(K, tr)
        s, Q = np.linalg.eigh(Kc[tr])
        s = np.clip(s, 0, None)
        shrink = s[None, :] / (s[None, :] + alphas[:, None])  # (alphas, n_tr)
        lev = 1.0 / len(tr) + (Q**2) @ shrink.T  # (n_tr, alphas)
        for lo in range(0, Y.shape[1], cell_block):
            cs = slice(lo, lo + cell_block)
            yt = Y[tr, cs]
            ybar = yt.mean(0)
            QtY = Q.T @ (yt - ybar)  # (n_tr, cells)
            resid = (yt - ybar)[None] - np.einsum("ik,ak,kc->aic", Q, shrink, QtY, optimize=True)
            loo = resid / (1.0 - lev.T)[:, :, None]
            best = np.argmin((loo**2).mean(1), axis=0)  # first minimum, as scikit-learn
            chosen[f, cs] = best
            coef = QtY[None] / (s[None, :, None] + alphas[:, None, None])
            coef = coef[best, :, np.arange(len(best))].T  # (n_tr, cells)
            pred[te, cs] = ybar + Kc[te] @ (Q @ coef)
    return pred, chosen


def ridge_predictivity(
    X, Y, alphas: Sequence[float] = tuple(10.0 ** np.arange(-2, 7)), n_folds: int = 5, seed: int = 0
) -> np.ndarray:
    """Per-cell Pearson r of cross-validated ridge predictions of Y (stimuli, cells) from X."""
    X = np.asarray(X, dtype=np.float64)
    Xc = X - X.mean(0)
    pred, _ = ridge_cv(Xc @ Xc.T, Y, alphas, kfold(len(X), n_folds, seed))
    return pearson_rows(pred.T, np.asarray(Y, dtype=np.float64).T)
