"""Cross-validation over images: seeded folds and per-fold held-out scores.

Scoring each fold's held-out images on their own and averaging over folds keeps chance at 0;
predictions pooled over folds are biased below it (each fold leans on its training mean).
"""

from __future__ import annotations

import numpy as np

from ..devices import to_numpy


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


def pearson_cols(a, b, xp=np):
    """Pearson r between matching columns (over axis -2, so stacks of (n, cols) matrices
    too; numpy or torch); NaN where either is constant."""
    ac = a - a.mean(-2, keepdims=True)
    bc = b - b.mean(-2, keepdims=True)
    r = (ac * bc).sum(-2) / xp.sqrt((ac * ac).sum(-2) * (bc * bc).sum(-2))
    const = (a == a[..., :1, :]).all(-2) | (b == b[..., :1, :]).all(-2)
    return xp.where(const, float("nan"), r)


def fold_mean(fold_r: np.ndarray, fisher: bool) -> np.ndarray:
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
    ``inference.permuted_columns``), as numpy arrays or as torch tensors (the correlations are
    computed on their device; only (folds, cells) comes back). Folds whose r is undefined (a
    constant prediction or response on the held-out images) are left out of the mean.
    """
    pred, Y, xp, index = _on_one_device(prediction, Y)
    if tuple(pred.shape) != tuple(Y.shape) or Y.ndim != 2:
        raise ValueError(
            f"prediction {tuple(pred.shape)} and Y {tuple(Y.shape)} must be the same (n, cells)"
        )
    with np.errstate(invalid="ignore", divide="ignore"):
        fold_r = np.stack(
            [to_numpy(pearson_cols(pred[index(te)], Y[index(te)], xp)) for _, te in folds]
        )
    return fold_mean(fold_r, fisher), fold_r


def pooled_scores(prediction, Y) -> np.ndarray:
    """(cells,) r of held-out predictions pooled over folds (biased below 0 without signal)."""
    pred, Y, xp, _ = _on_one_device(prediction, Y)
    with np.errstate(invalid="ignore", divide="ignore"):
        return to_numpy(pearson_cols(pred, Y, xp))


def _on_one_device(prediction, Y):
    """(prediction, Y, array module, index converter): float64 numpy, or torch tensors on the
    prediction's device."""
    if not hasattr(prediction, "detach"):
        return (
            np.asarray(prediction, dtype=np.float64),
            np.asarray(Y, dtype=np.float64),
            np,
            lambda i: i,
        )
    import torch

    dev = prediction.device
    pred = prediction.to(torch.float64)
    Y = torch.as_tensor(Y, device=dev).to(torch.float64)
    return pred, Y, torch, lambda i: torch.as_tensor(i, dtype=torch.int64, device=dev)
