"""Split-half reliability of each cell's tuning over images, Spearman-Brown stepped up.

Two uses, one formula (`pearson`, `spearman_brown`):

- `split_half_reliability`: the population store's column, lazily on an xarray
  (cell, image, repeat) array; one split, odd/even repeats or one seeded random permutation.
- `cell_reliability`: the comparison's ceilings on numpy (cells, stimuli, repeats); the mean
  r over ``n_splits`` random halves (`split_halves`), then stepped up.

Duck-typed on the arrays so this module imports numpy only (see `neural/__init__.py`).
"""

from __future__ import annotations

import warnings

import numpy as np

SPLITS = ("odd_even", "random")
#: the warning (logs) and figure note of data without repeats
NO_CEILING = (
    "no ceiling: the responses have 1 repeat per image, so split-half reliability and noise "
    "ceilings cannot be computed (they are NaN)"
)


def spearman_brown(r, factor: float = 2.0):
    """Spearman-Brown step-up of a reliability r to `factor` times the data.

    numpy input is computed in float64; an xarray keeps its dtype and stays lazy.
    """
    if not hasattr(r, "dims"):
        r = np.asarray(r, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return factor * r / (1 + (factor - 1) * r)


def pearson(a, b, center, dot):
    """Pearson r of a and b along one axis: ``center`` removes the mean, ``dot`` sums a * b."""
    a, b = center(a), center(b)
    return dot(a, b) / np.sqrt(dot(a, a) * dot(b, b))


def pearson_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson r between matching rows of a and b (last axis = observations)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return pearson(
            a,
            b,
            lambda x: x - x.mean(-1, keepdims=True),
            lambda x, y: np.einsum("...i,...i->...", x, y),
        )


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


def split_half_reliability(responses, split: str = "odd_even", seed: int = 0):
    """Per-cell split-half reliability across images of an xarray (cell, image, repeat).

    The repeats are split in two halves (odd/even repeat numbers, or a seeded random
    permutation), the mean response to each image is taken in each half, and the Pearson
    correlation r of the two tuning curves is stepped up to the full length: 2r / (1 + r).
    Returns a float32 DataArray over cells (lazy when ``responses`` is).
    """
    n_rep = responses.sizes["repeat"]
    if split == "odd_even":
        order = np.arange(n_rep)
    elif split == "random":
        order = np.random.default_rng(seed).permutation(n_rep)
    else:
        raise ValueError(f"unknown reliability split {split!r} ({' or '.join(SPLITS)})")
    a = responses.isel(repeat=order[0::2]).mean("repeat", skipna=True)
    b = responses.isel(repeat=order[1::2]).mean("repeat", skipna=True)
    r = pearson(a, b, lambda x: x - x.mean("image"), lambda x, y: (x * y).sum("image"))
    rel = spearman_brown(r)
    rel.attrs = {"long_name": "split-half reliability (Spearman-Brown)", "split": split}
    return rel.astype(np.float32)
