"""Stimuli to network inputs: resize, scale to [0, 1], channels, NeuRN, normalisation.

What a zoo row's ``preprocess``, ``resize`` and ``neurn`` columns do (``preprocess model``:
the mean and std of the builder's own data config, e.g. timm's). Importing this module
does not import torch (the zoo table is validated at Snakemake parse time).
"""

from __future__ import annotations

import functools

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# name -> (channels, mean, std) applied to images scaled to [0, 1]
PREPROCESS: dict[str, tuple[int, tuple[float, ...], tuple[float, ...]]] = {
    "imagenet": (3, IMAGENET_MEAN, IMAGENET_STD),
    "unit": (3, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
    "centered": (3, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    "gray": (1, (0.0,), (1.0,)),
    "gray_centered": (1, (0.5,), (0.5,)),
}


def preprocess_settings(spec) -> dict:
    """Everything preprocessing does to a stimulus (a ``zoo.ModelSpec``), for the cache key."""
    from .zoo import BUILDERS

    if spec.preprocess == "model":
        channels, mean, std = BUILDERS[spec.source].data_config(spec)
    else:
        channels, mean, std = PREPROCESS[spec.preprocess]
    neurn = None if BUILDERS[spec.source].owns_neurn else spec.neurn_config
    return {
        "input_size": spec.input_size,
        "resize": spec.resize,
        "interpolation": "bilinear-antialias",
        "scale": 1 / 255,
        "channels": channels,
        "mean": list(mean),
        "std": list(std),
        "neurn": neurn,
    }


def make_preprocess(spec):
    """A torch module: (B, H, W) grayscale 0-255 -> (B, C, S, S) network input."""
    s = preprocess_settings(spec)
    cls = preprocess_class()
    return cls(s["input_size"], s["resize"], s["channels"], s["mean"], s["std"], s["neurn"])


@functools.cache
def preprocess_class():
    """The preprocessing nn.Module class (built on first use: importing zoo needs no torch)."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    from ..neurn import NeuRN

    class _Preprocess(nn.Module):
        """Resize, scale to [0, 1], to C channels, optional NeuRN, then (x - mean) / std.

        Runs in float32 on the model's device; input (B, H, W) or (B, 1, H, W) in 0-255.
        """

        def __init__(self, size, resize, channels, mean, std, neurn=None):
            super().__init__()
            self.size, self.resize, self.channels = int(size), resize, int(channels)
            self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
            self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))
            self.neurn = NeuRN(**neurn) if neurn else None

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            x = images.float()
            if x.ndim == 3:
                x = x[:, None]
            if x.shape[1] != 1:
                raise ValueError(f"expected grayscale images, got {tuple(images.shape)}")
            h, w = x.shape[-2:]
            s = self.size
            if self.resize == "center_crop":
                scale = s / min(h, w)
                nh, nw = max(s, round(h * scale)), max(s, round(w * scale))
                x = F.interpolate(x, (nh, nw), mode="bilinear", antialias=True, align_corners=False)
                top, left = (nh - s) // 2, (nw - s) // 2
                x = x[..., top : top + s, left : left + s]
            elif (h, w) != (s, s):
                x = F.interpolate(x, (s, s), mode="bilinear", antialias=True, align_corners=False)
            x = x / 255.0
            x = x.expand(-1, self.channels, -1, -1)
            if self.neurn is not None:
                x = self.neurn(x)
            return (x - self.mean) / self.std

    return _Preprocess
