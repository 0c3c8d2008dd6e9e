"""NeuRN: Neural Response Normalization (Jalil, Qazi, Iqbal; arXiv 2505.06881).

Per channel, over k x k neighbourhoods with stride 1 (size kept by padding):

    mu    = 1/k^2 sum x_ij
    sigma = sqrt(1/k^2 sum (x_ij - mu)^2)
    out   = sigma / max(sigma)

i.e. the local standard deviation (local contrast), scaled to [0, 1] by its maximum over the
image (``max_over="image"``) or over each channel of each image (``max_over="channel"``).
No learnable parameters.

Implementation: two box filters (``avg_pool2d`` of x and x^2) give ``var = E[x^2] - E[x]^2``.
To keep that subtraction from cancelling catastrophically, x is first shifted by its
per-(image, channel) mean (variance is shift invariant, so the shift is detached: its exact
gradient is zero), and half precision inputs are computed in float32 and cast back. A variance
at or below the rounding floor of its own computation (``k^2 * machine_eps * E[x^2]``) is set to
exactly 0, so constant regions and constant images give 0 (never NaN), and the square root is
guarded so its gradient there is 0 rather than inf.

Even k: the window of output pixel i covers input pixels ``i - (k/2 - 1) ... i + k/2``, i.e. it
reaches one pixel further towards the bottom/right (the convention of PyTorch's
``padding="same"``): padding is ``(k - 1) // 2`` before and ``k // 2`` after on each axis.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .neurn_numpy import check_reflect, pad_widths
from .neurn_settings import EPS, allowed, default, settings  # noqa: F401

MAX_OVER = allowed("max_over")
PADDING = allowed("padding")
#: the defaults of schemas/neurn.schema.yaml
DEFAULT = default()


def _check(kernel_size: int, max_over: str, padding: str) -> int:
    k = int(kernel_size)
    if k != kernel_size or k < 1:
        raise ValueError(f"kernel_size must be a positive integer, got {kernel_size!r}")
    if max_over not in MAX_OVER:
        raise ValueError(f"max_over must be one of {MAX_OVER}, got {max_over!r}")
    if padding not in PADDING:
        raise ValueError(f"padding must be one of {PADDING}, got {padding!r}")
    return k


def box_means(xp: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Means of x and x^2 over k x k windows (valid, stride 1) of a padded tensor.

    Two 2-D average pools. A separable version (k x 1 then 1 x k on x and x^2 stacked) was
    measured slower in eager mode on an H100 (benchmarks/README.md), so this one stays.
    """
    return F.avg_pool2d(xp, k, stride=1), F.avg_pool2d(xp * xp, k, stride=1)


def local_std(
    x: torch.Tensor,
    kernel_size: int = DEFAULT["kernel_size"],
    padding: str = DEFAULT["padding"],
) -> torch.Tensor:
    """Local standard deviation over k x k windows (stride 1, size kept), per channel.

    Returns float32 (float64 for float64 input); see the module docstring for the numerics.
    """
    k = _check(kernel_size, "image", padding)
    if x.ndim != 4:
        raise ValueError(
            f"expected a (batch, channel, height, width) tensor, got shape {tuple(x.shape)}"
        )
    if not torch.is_floating_point(x):
        raise TypeError(f"expected a floating point tensor, got {x.dtype}")
    compute = torch.float64 if x.dtype == torch.float64 else torch.float32
    xc = x.to(compute)
    lo, hi = pad_widths(k)
    if lo or hi:
        check_reflect(k, padding, *x.shape[-2:])
        mode = "constant" if padding == "zeros" else padding
        xp = F.pad(xc, (lo, hi, lo, hi), mode=mode)
    else:
        xp = xc
    # Shift by the (unpadded) per-channel mean: exact for the variance, removes cancellation.
    xp = xp - xc.mean(dim=(2, 3), keepdim=True).detach()
    mu, m2 = box_means(xp, k)
    var = m2 - mu * mu
    floor = (k * k * torch.finfo(compute).eps) * m2
    pos = var > floor
    one = torch.ones((), dtype=compute, device=x.device)
    return torch.where(pos, torch.sqrt(torch.where(pos, var, one)), torch.zeros_like(var))


def neurn(
    x: torch.Tensor,
    kernel_size: int = DEFAULT["kernel_size"],
    max_over: str = DEFAULT["max_over"],
    padding: str = DEFAULT["padding"],
    eps: float = EPS,
) -> torch.Tensor:
    """NeuRN of a (B, C, H, W) tensor: local std divided by its max; same shape and dtype.

    ``max_over="image"``: one max per image (over channels and pixels); ``"channel"``: one per
    image and channel. ``padding``: reflect | replicate | circular | zeros. ``eps`` floors the
    divisor so an all-constant image (max 0) maps to 0.
    """
    _check(kernel_size, max_over, padding)
    sigma = local_std(x, kernel_size, padding)
    dims = (1, 2, 3) if max_over == "image" else (2, 3)
    smax = sigma.amax(dim=dims, keepdim=True)
    return (sigma / smax.clamp_min(eps)).to(x.dtype)


class NeuRN(nn.Module):
    """NeuRN as a parameter-free module: (B, C, H, W) -> (B, C, H, W) in [0, 1]."""

    def __init__(
        self,
        kernel_size: int = DEFAULT["kernel_size"],
        max_over: str = DEFAULT["max_over"],
        padding: str = DEFAULT["padding"],
        eps: float = EPS,
    ):
        super().__init__()
        self.kernel_size = _check(kernel_size, max_over, padding)
        self.max_over = max_over
        self.padding = padding
        self.eps = float(eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return neurn(x, self.kernel_size, self.max_over, self.padding, self.eps)

    def settings(self) -> dict:
        """The settings that change the output (for cache keys and provenance)."""
        return {
            "kernel_size": self.kernel_size,
            "max_over": self.max_over,
            "padding": self.padding,
            "eps": self.eps,
        }

    def extra_repr(self) -> str:
        return (
            f"kernel_size={self.kernel_size}, max_over={self.max_over!r}, "
            f"padding={self.padding!r}, eps={self.eps:g}"
        )
