"""Planted receptive fields: Gabor (excitatory) or difference-of-Gaussians (inhibitory)
cells whose position and size depend on area and Cre line, and their firing rates."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..neural.labels import ei_class
from .experiments import (
    AREA_RF,
    CELL_ID_BASE,
    EXPERIMENT_ID_BASE,
    INHIBITORY_SIZE_FACTOR,
    Experiment,
)


def plant_cells(exp: Experiment, height: int, width: int) -> pd.DataFrame:
    """Receptive-field parameters for every cell of an experiment (one row per cell)."""
    rng = np.random.default_rng(exp.seed)
    (cx, cy), sigma_frac = AREA_RF[exp.area]
    inhibitory = ei_class(exp.cre_line) == "inhibitory"
    size = sigma_frac * (INHIBITORY_SIZE_FACTOR if inhibitory else 1.0)
    n = exp.n_cells
    ids = CELL_ID_BASE + (exp.experiment_id - EXPERIMENT_ID_BASE) * 10_000 + np.arange(n)
    sigma = height * size * rng.lognormal(0.0, 0.15, n)
    return pd.DataFrame(
        {
            "cell_specimen_id": ids.astype(np.int64),
            "rf_type": "dog" if inhibitory else "gabor",
            "x0": width * np.clip(cx + rng.normal(0, 0.08, n), 0.1, 0.9),
            "y0": height * np.clip(cy + rng.normal(0, 0.08, n), 0.1, 0.9),
            "sigma": sigma,
            "theta": rng.uniform(0, np.pi, n),
            "wavelength": sigma * rng.uniform(2.0, 3.0, n),
            "phase": rng.uniform(0, 2 * np.pi, n),
            "selectivity": rng.uniform(0.35, 0.6, n) if inhibitory else rng.uniform(0.85, 1.0, n),
            "peak_rate_hz": rng.lognormal(np.log(15.0), 0.3, n),
            "baseline_rate_hz": rng.uniform(0.5, 2.0, n),
            "noise_sd": rng.uniform(0.03, 0.06, n),
        }
    )


def rf_map(cell: dict | pd.Series, height: int, width: int) -> np.ndarray:
    """The planted receptive field of one cell on the stimulus grid, unit L2 norm."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    dx, dy = x - cell["x0"], y - cell["y0"]
    s = cell["sigma"]
    if cell["rf_type"] == "gabor":
        xr = dx * np.cos(cell["theta"]) + dy * np.sin(cell["theta"])
        yr = -dx * np.sin(cell["theta"]) + dy * np.cos(cell["theta"])
        env = np.exp(-(xr**2 + (0.8 * yr) ** 2) / (2 * s**2))
        m = env * np.cos(2 * np.pi * xr / cell["wavelength"] + cell["phase"])
    elif cell["rf_type"] == "dog":
        r2 = dx**2 + dy**2
        m = np.exp(-r2 / (2 * s**2)) - 0.5 * np.exp(-r2 / (2 * (2 * s) ** 2))
    else:
        raise ValueError(f"unknown rf_type {cell['rf_type']!r}")
    m = m - m.mean()
    return m / max(np.linalg.norm(m), 1e-12)


def rf_maps(cells: pd.DataFrame, height: int, width: int) -> np.ndarray:
    """Planted maps of all cells, (n_cells, height, width)."""
    return np.stack([rf_map(row, height, width) for _, row in cells.iterrows()])


def mouse_component(
    mouse: str, n_cells: int, n_images: int, dims: int, seed: int, rng
) -> np.ndarray:
    """(n_cells, n_images) a mouse's own response component, each cell's standardised over
    images: ``dims`` random image patterns of the mouse (seeded by ``seed`` and the mouse,
    so every experiment of a mouse shares them, and no other mouse or model layer has them),
    mixed by each cell with random weights drawn from ``rng``."""
    import zlib

    patterns = np.random.default_rng([int(seed), zlib.crc32(str(mouse).encode())])
    own = rng.normal(size=(n_cells, dims)) @ patterns.normal(size=(dims, n_images))
    own -= own.mean(1, keepdims=True)
    return own / np.where(own.std(1, keepdims=True) > 0, own.std(1, keepdims=True), 1.0)


def with_mouse(u: np.ndarray, own: np.ndarray | None, share: float) -> np.ndarray:
    """A drive (n_cells, n_images) with ``share`` of each cell's variance over images given
    to its mouse's own component (`mouse_component`); mean and variance are kept."""
    if own is None or share <= 0:
        return u
    mean, sd = u.mean(1, keepdims=True), u.std(1, keepdims=True)
    return mean + np.sqrt(1 - share) * (u - mean) + np.sqrt(share) * sd * own


def firing_rates(
    cells: pd.DataFrame, images: np.ndarray, own: np.ndarray | None = None, share: float = 0.0
) -> np.ndarray:
    """Mean rate (Hz) of every cell to every image, (n_cells, n_images).

    Linear drive through the planted RF on globally z-scored pixels, mixed with an untuned
    luminance drive by (1 - selectivity), then a softplus nonlinearity. ``own``, ``share``:
    the mouse's own component and its share of the drive (`with_mouse`).
    """
    n_img, h, w = images.shape
    z = (images - images.mean()) / images.std()
    maps = rf_maps(cells, h, w)
    drive = maps.reshape(len(cells), -1) @ z.reshape(n_img, -1).T
    drive = (drive - drive.mean(1, keepdims=True)) / (drive.std(1, keepdims=True) + 1e-12)
    lum = z.reshape(n_img, -1).mean(1)
    lum = (lum - lum.mean()) / (lum.std() + 1e-12)
    sel = cells["selectivity"].to_numpy()[:, None]
    return _rates_from_drive(with_mouse(sel * drive + (1 - sel) * lum[None, :], own, share), cells)


def _rates_from_drive(u: np.ndarray, cells: pd.DataFrame) -> np.ndarray:
    """Softplus of a standardised drive (n_cells, n_images), scaled to peak and baseline Hz."""
    nl = np.log1p(np.exp(2.0 * u - 1.0))
    nl /= np.log1p(np.exp(2.0 * 2.5 - 1.0))
    peak = cells["peak_rate_hz"].to_numpy()[:, None]
    return cells["baseline_rate_hz"].to_numpy()[:, None] + peak * nl
