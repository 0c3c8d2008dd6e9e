"""NeuRN's local standard deviation in numpy float64, without torch.

The CPU path of the receptive-field metrics: a comparison job on a machine without a GPU
scores NeuRN maps without importing torch (2-3 s a job). Same definition and numerics as
`mice2machines.neurn.local_std` (its module docstring): the padding of even kernels, the
per-(image, channel) mean shift and the variance floor; equal to it on float64 input.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

#: torch's padding modes (the schema's ``padding`` values) as numpy's
PAD_MODES = {"reflect": "reflect", "replicate": "edge", "circular": "wrap", "zeros": "constant"}


def pad_widths(kernel_size: int) -> tuple[int, int]:
    """(before, after) padding per axis that keeps the size; after >= before for even k."""
    return (kernel_size - 1) // 2, kernel_size // 2


def check_reflect(kernel_size: int, padding: str, height: int, width: int) -> None:
    """Reflect padding needs maps larger than the padding it adds."""
    hi = pad_widths(kernel_size)[1]
    if padding == "reflect" and (hi >= height or hi >= width):
        raise ValueError(
            f"reflect padding of {hi} needs height and width > {hi}, got {height}x{width}; "
            "use a smaller kernel_size or padding='replicate'"
        )


def _box_mean(x: np.ndarray, k: int) -> np.ndarray:
    """Means over k x k windows (valid, stride 1) of the last two axes: k-term sums along
    each axis in turn, so rounding stays that of the window, as in avg_pool2d (a
    summed-area table's differences carry the rounding of the whole image's sum)."""
    rows = sliding_window_view(x, k, axis=-2).sum(-1)
    return sliding_window_view(rows, k, axis=-1).sum(-1) / (k * k)


def local_std(x, kernel_size: int, padding: str) -> np.ndarray:
    """Local standard deviation (float64) of a (batch, channel, height, width) array over
    k x k windows, stride 1, size kept."""
    k = int(kernel_size)
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 4:
        raise ValueError(f"expected a (batch, channel, height, width) array, got {x.shape}")
    lo, hi = pad_widths(k)
    check_reflect(k, padding, *x.shape[-2:])
    xp = np.pad(x, ((0, 0), (0, 0), (lo, hi), (lo, hi)), mode=PAD_MODES[padding])
    xp -= x.mean(axis=(2, 3), keepdims=True)
    mu = _box_mean(xp, k)
    m2 = _box_mean(xp * xp, k)
    var = m2 - mu * mu
    pos = var > (k * k * np.finfo(np.float64).eps) * m2
    return np.where(pos, np.sqrt(np.where(pos, var, 1.0)), 0.0)
