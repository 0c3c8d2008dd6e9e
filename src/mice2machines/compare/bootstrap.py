"""Bootstrap over stimuli (and cells): resample indices, resampled scores, percentile intervals."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

from .gram import Representations


def bootstrap_indices(n: int, n_boot: int, seed: int = 0) -> np.ndarray:
    """(n_boot, n) stimulus indices drawn with replacement (seeded)."""
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


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


def bootstrap_representation(
    neural: Representations, model: Representations, metrics: Sequence[str], indices: np.ndarray
) -> dict:
    """{metric: (n_boot, A, B)} representation metrics over resampled stimuli.

    Each metric's own ``bootstrap`` rule scores a resample (RSA drops the pairs of a stimulus
    with its own copy); without one, its score of the resampled Gram matrices and RDMs.
    """
    from .registry import get_metric

    specs = [get_metric(m) for m in metrics]
    for spec in specs:
        if spec.kind != "representation":
            raise ValueError(f"{spec.name!r} is not a representation metric")
    out = {m: np.empty((len(indices), len(neural.names), len(model.names))) for m in metrics}
    for b, idx in enumerate(indices):
        for spec in specs:
            if spec.bootstrap is not None:
                out[spec.name][b] = spec.bootstrap(neural, model, idx)
            else:
                out[spec.name][b] = spec.score(resampled(neural, idx), resampled(model, idx))
    return out


def bootstrap_cell_r(pred: np.ndarray, obs: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """(n_boot, cells) Pearson r of predictions vs observations over resampled stimuli.

    pred, obs: (cells, stimuli). Uses stimulus counts and five matrix products, so cost does not
    grow with repeated sampling of the same stimulus.
    """
    n = pred.shape[1]
    counts = np.zeros((len(indices), n))
    for b, idx in enumerate(indices):
        counts[b] = np.bincount(idx, minlength=n)
    C = counts.T
    pred = np.asarray(pred, dtype=np.float64)
    obs = np.asarray(obs, dtype=np.float64)
    pred = pred - pred.mean(1, keepdims=True)
    obs = obs - obs.mean(1, keepdims=True)
    sp, so = pred @ C, obs @ C
    spp, soo, spo = (pred * pred) @ C, (obs * obs) @ C, (pred * obs) @ C
    cov = spo - sp * so / n
    with np.errstate(invalid="ignore", divide="ignore"):
        r = cov / np.sqrt((spp - sp**2 / n) * (soo - so**2 / n))
    return r.T


def _counted_r(pred: np.ndarray, obs: np.ndarray, C: np.ndarray) -> np.ndarray:
    """(cells, n_boot) r of pred vs obs (cells, m) with stimulus counts C (m, n_boot)."""
    pred = pred - pred.mean(1, keepdims=True)
    obs = obs - obs.mean(1, keepdims=True)
    w = C.sum(0)
    sp, so = pred @ C, obs @ C
    spp, soo, spo = (pred * pred) @ C, (obs * obs) @ C, (pred * obs) @ C
    with np.errstate(invalid="ignore", divide="ignore"):
        cov = spo - sp * so / w
        return cov / np.sqrt((spp - sp**2 / w) * (soo - so**2 / w))


def bootstrap_fold_r(
    pred: np.ndarray, obs: np.ndarray, folds, indices: np.ndarray, fisher: bool = False
) -> np.ndarray:
    """(n_boot, cells) fold-averaged r over resampled stimuli: each fold's held-out stimuli
    as drawn in the resample (with their multiplicities), r per fold, then the mean over the
    folds as the score takes it (mean r, or mean Fisher z with ``fisher``)."""
    pred = np.asarray(pred, dtype=np.float64)
    obs = np.asarray(obs, dtype=np.float64)
    n = pred.shape[1]
    counts = np.stack([np.bincount(idx, minlength=n) for idx in indices]).astype(np.float64)
    rs = np.stack([_counted_r(pred[:, te], obs[:, te], counts[:, te].T) for _, te in folds])
    ok = np.isfinite(rs)
    with np.errstate(invalid="ignore", divide="ignore"):
        x = np.arctanh(np.clip(rs, -1, 1)) if fisher else rs
        mean = np.where(ok, x, 0.0).sum(0) / ok.sum(0)
    mean = np.tanh(mean) if fisher else mean
    return np.where(ok.any(0), mean, np.nan).T


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
