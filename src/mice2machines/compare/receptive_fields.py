"""The paper's receptive-field representation N = T^T . F_S and its RMSE comparison.

F_S: the stimuli resized (area averaging) to the map grid, flattened, scaled to 0..1.
T: one value per stimulus: a neuron's trial-averaged response, or a model channel's spatially
averaged activation (optionally after NeuRN), or a unit's activation.
N = T^T . F_S is the response-weighted sum of the images, a spike-triggered-average-like map.

Defaults (the papers do not say; see config/README.md): ``center=True`` subtracts the mean
response over stimuli first (equivalently the mean image from F_S: a reverse-correlation map
rather than a copy of the mean image), and ``normalize="zscore"`` scales each map to zero mean
and unit standard deviation over pixels, so neuron and unit maps share one scale and
RMSE = sqrt(2 (1 - r_pixels)). Other normalisations: "sum" (divide by the summed absolute
response: the response-weighted average image), "minmax" (0..1), "l2", "none".
"""

from __future__ import annotations

import numpy as np
import pandas as pd

NORMALIZATIONS = ("zscore", "sum", "minmax", "l2", "none")


# --------------------------------------------------------------------------- stimuli


def area_weights(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) matrix averaging input pixels over each output pixel's extent."""
    edges = np.linspace(0, n_in, n_out + 1)
    lo, hi = edges[:-1, None], edges[1:, None]
    pix = np.arange(n_in)[None, :]
    overlap = np.clip(np.minimum(hi, pix + 1) - np.maximum(lo, pix), 0, None)
    return overlap / overlap.sum(1, keepdims=True)


def resize_images(images: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Area-average (n, H, W) images to (n, h, w), float64."""
    images = np.asarray(images, dtype=np.float64)
    h, w = int(size[0]), int(size[1])
    wy = area_weights(images.shape[1], h)
    wx = area_weights(images.shape[2], w)
    return np.einsum("yh,nhw,xw->nyx", wy, images, wx, optimize=True)


def stimulus_matrix(
    images: np.ndarray, size: tuple[int, int] | None = None, scale: float = 255.0
) -> np.ndarray:
    """F_S: (stimuli, pixels) resized, flattened images divided by `scale` (0..1 for 0..255)."""
    images = np.asarray(images, dtype=np.float64)
    if size is not None and tuple(size) != images.shape[1:]:
        images = resize_images(images, size)
    return images.reshape(len(images), -1) / float(scale)


# --------------------------------------------------------------------------- maps


def normalize_maps(maps: np.ndarray, method: str = "zscore", weights_abs_sum=None) -> np.ndarray:
    """Normalise each row (a flattened map); see the module docstring for the methods."""
    if method not in NORMALIZATIONS:
        raise ValueError(f"unknown map normalisation {method!r}; known: {NORMALIZATIONS}")
    m = np.asarray(maps, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        if method == "zscore":
            sd = m.std(1, keepdims=True)
            return np.where(sd > 0, (m - m.mean(1, keepdims=True)) / sd, 0.0)
        if method == "sum":
            if weights_abs_sum is None:
                raise ValueError("normalize='sum' needs the summed responses")
            s = np.asarray(weights_abs_sum, dtype=np.float64)[:, None]
            return np.where(s > 0, m / s, 0.0)
        if method == "minmax":
            lo, hi = m.min(1, keepdims=True), m.max(1, keepdims=True)
            return np.where(hi > lo, (m - lo) / (hi - lo), 0.0)
        if method == "l2":
            n = np.linalg.norm(m, axis=1, keepdims=True)
            return np.where(n > 0, m / n, 0.0)
    return m


def response_maps(
    T: np.ndarray, F: np.ndarray, center: bool = True, normalize: str = "zscore"
) -> np.ndarray:
    """Maps N = T^T . F_S for k response vectors T (k, stimuli) and F_S (stimuli, pixels)."""
    T = np.asarray(T, dtype=np.float64)
    if T.ndim == 1:
        T = T[None]
    if T.shape[1] != F.shape[0]:
        raise ValueError(f"T has {T.shape[1]} stimuli, F_S has {F.shape[0]}")
    T = np.nan_to_num(T - np.nanmean(T, 1, keepdims=True) if center else T)
    maps = T @ F
    return normalize_maps(maps, normalize, np.abs(T).sum(1))


def trial_average(responses: np.ndarray) -> np.ndarray:
    """(cells, stimuli) mean over repeats of (cells, stimuli, repeats), NaN repeats ignored."""
    r = np.asarray(responses, dtype=np.float64)
    if r.ndim == 2:
        return r
    counts = np.isfinite(r).sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.nansum(r, -1) / counts
    return out


def neuron_maps(
    responses: np.ndarray,
    images: np.ndarray,
    size: tuple[int, int] | None,
    center: bool = True,
    normalize: str = "zscore",
) -> np.ndarray:
    """(cells, h, w) maps from responses (cells, stimuli[, repeats]) and images (stimuli, H, W)."""
    F = stimulus_matrix(images, size)
    h, w = size if size is not None else images.shape[1:]
    T = trial_average(responses)
    return response_maps(T, F, center, normalize).reshape(len(T), h, w)


def channel_activity(x, neurn: dict | None = None, device: str = "cpu"):
    """Spatially averaged channel activity (stimuli, channels) of a (B, C, H, W) feature map.

    With ``neurn`` (NeuRN settings; partial ones, True or the zoo form are completed by
    `mice2machines.neurn_settings.settings`) the maps pass NeuRN first (maps too small for
    reflect padding use replicate): in torch float32 on a torch ``device`` ('cuda',
    'torch:cpu'), in numpy float64 on 'cpu' (`mice2machines.neurn_numpy`, no torch import).
    Returns (activity, scale): for max_over="image" the activity is not yet divided by the
    per-image maximum, which is returned as `scale` (stimuli,) so that chunks of channels can
    be combined (divide by the maximum of their scales); otherwise scale is None.
    """
    from ..devices import uses_torch
    from ..neurn_settings import EPS, settings

    neurn = settings(neurn)
    if neurn is None:
        arr = np.asarray(x, dtype=np.float64) if not hasattr(x, "detach") else x.double()
        out = arr.mean((2, 3))
        return (out.cpu().numpy() if hasattr(out, "cpu") else out), None
    k = int(neurn["kernel_size"])
    pad = neurn["padding"]
    if pad == "reflect" and k // 2 >= min(x.shape[-2:]):
        pad = "replicate"  # maps too small to reflect (e.g. 1x1, 2x2)
    if uses_torch(device) or hasattr(x, "detach"):
        import torch

        from ..neurn import local_std

        t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
        t = t.to(device=str(device).removeprefix("torch:"), dtype=torch.float32)
        sigma = local_std(t, k, pad).double().cpu().numpy()
    else:
        from ..neurn_numpy import local_std

        sigma = local_std(x, k, pad)
    if neurn["max_over"] == "image":
        return sigma.mean((2, 3)), sigma.max((1, 2, 3))
    smax = sigma.max((2, 3), keepdims=True)
    return (sigma / np.maximum(smax, EPS)).mean((2, 3)), None


def unit_maps(
    activity: np.ndarray, F: np.ndarray, center: bool = True, normalize: str = "zscore"
) -> np.ndarray:
    """(units, pixels) maps of units from their activity (stimuli, units)."""
    return response_maps(np.asarray(activity).T, F, center, normalize)


# --------------------------------------------------------------------------- RMSE


def rmse_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a), len(b)) RMSE between flattened maps: sqrt((|a|^2 + |b|^2 - 2 a.b) / pixels)."""
    a = np.asarray(a, dtype=np.float64).reshape(len(a), -1)
    b = np.asarray(b, dtype=np.float64).reshape(len(b), -1)
    d2 = (
        np.einsum("ij,ij->i", a, a)[:, None]
        + np.einsum("ij,ij->i", b, b)[None, :]
        - 2.0 * (a @ b.T)
    ) / a.shape[1]
    return np.sqrt(np.clip(d2, 0, None))


class RMSEAccumulator:
    """Best-matching (lowest RMSE) unit per neuron, streamed over chunks of unit maps.

    A unit whose map is all zero (constant activity: nothing to correlate) is never a best
    unit; its RMSE to every z-scored map is exactly 1, which would beat any real but weak
    match (uncorrelated maps are sqrt(2) apart). float64 throughout; with a torch ``device``
    ('cuda', 'torch:cpu') the distances are computed there (the maps of the permutation nulls
    make this the costly step). ``mean_rmse`` averages over all units."""

    def __init__(self, neuron_maps: np.ndarray, device: str = "cpu"):
        from ..devices import to_device, uses_torch

        self.maps = np.asarray(neuron_maps, dtype=np.float64).reshape(len(neuron_maps), -1)
        self.device = str(device)
        self._torch = uses_torch(self.device)
        self._maps = to_device(self.maps, self.device, np.float64) if self._torch else self.maps
        n = len(self.maps)
        self.best = np.full(n, np.inf)
        self.best_unit = np.full(n, -1, dtype=np.int64)
        self.total = np.zeros(n)
        self.n_units = 0

    def _distances(self, unit_maps: np.ndarray):
        """(best value, best unit, row sums) of the RMSE of every neuron to these units."""
        if not self._torch:
            d = rmse_matrix(self.maps, unit_maps)
            dead = ~np.asarray(unit_maps).reshape(len(unit_maps), -1).any(1)
            j = np.argmin(np.where(dead[None, :], np.inf, d), axis=1)
            v = np.where(dead.all(), np.inf, d[np.arange(len(d)), j])
            return v, j, d.sum(1)
        import torch

        from ..devices import to_device

        a = self._maps
        b = to_device(np.asarray(unit_maps).reshape(len(unit_maps), -1), self.device, np.float64)
        d2 = ((a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * (a @ b.T)) / a.shape[1]
        d = torch.sqrt(torch.clamp(d2, min=0))
        dead = ~(b != 0).any(1)
        v, j = torch.where(dead[None, :], torch.inf, d).min(dim=1)
        return v.cpu().numpy(), j.cpu().numpy(), d.sum(1).cpu().numpy()

    #: most entries (neurons x units) of one distance matrix: the units of a chunk are
    #: compared this many at a time, so memory stays bounded whatever the chunk
    max_entries = 2**23

    def update(self, unit_maps: np.ndarray, activity: np.ndarray | None = None) -> None:
        """Add (units, pixels) maps; unit numbers continue from the previous chunks.

        With `activity` (stimuli, units), the best unit's activity is kept (best_activity).
        """
        step = max(1, self.max_entries // max(1, len(self.maps)))
        for lo in range(0, len(unit_maps), step):
            act = None if activity is None else np.asarray(activity)[:, lo : lo + step]
            self._update(unit_maps[lo : lo + step], act)

    def _update(self, unit_maps: np.ndarray, activity: np.ndarray | None) -> None:
        if len(unit_maps) == 0:
            return
        v, j, total = self._distances(unit_maps)
        better = v < self.best
        self.best[better] = v[better]
        self.best_unit[better] = j[better] + self.n_units
        if activity is not None:
            act = np.asarray(activity, dtype=np.float64)
            if getattr(self, "best_activity", None) is None:
                self.best_activity = np.full((len(self.maps), act.shape[0]), np.nan)
            self.best_activity[better] = act[:, j[better]].T
        self.total += total
        self.n_units += len(unit_maps)

    def result(self) -> dict:
        """best_rmse, best_unit, mean_rmse (over units) and, if tracked, best_activity."""
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = self.total / self.n_units
        out = {"best_rmse": self.best, "best_unit": self.best_unit, "mean_rmse": mean}
        if getattr(self, "best_activity", None) is not None:
            out["best_activity"] = self.best_activity
        return out


# --------------------------------------------------------------------------- summaries


def top_down(table: pd.DataFrame, by: str | list[str], value: str = "rmse") -> pd.DataFrame:
    """Median, quartiles and count of `value` per group (e.g. area, cre_line, model, layer)."""
    by = [by] if isinstance(by, str) else list(by)
    g = table.groupby(by, observed=True, sort=True)[value]
    out = pd.DataFrame(
        {
            "median": g.median(),
            "q25": g.quantile(0.25),
            "q75": g.quantile(0.75),
            "n": g.count(),
        }
    )
    return out.reset_index()


def bottom_up(
    table: pd.DataFrame,
    value: str = "rmse",
    by: str | list[str] = "cell",
    lower_is_better: bool = True,
) -> pd.DataFrame:
    """Per neuron (or other key) the row with the best `value` (its best model/layer/unit)."""
    by = [by] if isinstance(by, str) else list(by)
    t = table.dropna(subset=[value])
    idx = t.groupby(by)[value].idxmin() if lower_is_better else t.groupby(by)[value].idxmax()
    return t.loc[idx.values].reset_index(drop=True)
