"""Split-half reliability: random halves of the repeats, Spearman-Brown stepped up."""

from __future__ import annotations

import warnings

import numpy as np


def spearman_brown(r, factor: float = 2.0):
    """Spearman-Brown step-up of a reliability r to `factor` times the data."""
    r = np.asarray(r, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return factor * r / (1 + (factor - 1) * r)


def split_halves(responses: np.ndarray, n_splits: int = 10, seed: int = 0):
    """Yield (half_a, half_b) trial means (cells, stimuli) over random halves of the repeats.

    responses: (cells, stimuli, repeats) with NaN for missing repeats.
    """
    rng = np.random.default_rng(seed)
    n_rep = responses.shape[-1]
    if n_rep < 2:
        raise ValueError("split halves need at least 2 repeats")
    for _ in range(n_splits):
        order = rng.permutation(n_rep)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            a = np.nanmean(responses[..., order[: n_rep // 2]], axis=-1)
            b = np.nanmean(responses[..., order[n_rep // 2 :]], axis=-1)
        yield a, b


def _nan_to_mean(x: np.ndarray) -> np.ndarray:
    """Replace NaN (a stimulus with no repeat in a half) by the neuron's mean response."""
    if np.isnan(x).any():
        fill = np.nanmean(x, axis=-1, keepdims=True)
        x = np.where(np.isnan(x), np.nan_to_num(fill), x)
    return x


def cell_reliability(responses: np.ndarray, n_splits: int = 10, seed: int = 0) -> np.ndarray:
    """Per-cell split-half reliability of the mean response (Spearman-Brown), mean over splits."""
    rs = []
    for a, b in split_halves(responses, n_splits, seed):
        rs.append(pearson_rows(_nan_to_mean(a), _nan_to_mean(b)))
    return spearman_brown(np.mean(rs, axis=0))


def pearson_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson r between matching rows of a and b (last axis = observations)."""
    a = a - a.mean(-1, keepdims=True)
    b = b - b.mean(-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.einsum("...i,...i->...", a, b) / np.sqrt(
            np.einsum("...i,...i->...", a, a) * np.einsum("...i,...i->...", b, b)
        )
