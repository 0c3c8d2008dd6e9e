"""Digit architectures for the domain-generalization stage, with optional NeuRN in front.

Every model is a :class:`DigitNet`: ``neurn`` (NeuRN or identity) -> fixed centring
``(x - 0.5) / 0.5`` -> ``body`` (the architecture). Inputs are float images in [0, 1],
shape (B, 3, H, W); the bodies are adapted to 32 x 32 digits (first stride 1, no stem pooling).
Baseline and NeuRN models share one parameter layout (``body.*``) because NeuRN has no
parameters, so one seed gives the same initial weights to both: a paired comparison.

Checkpoints are plain dicts ``{"format", "arch", "num_classes", "neurn", "state_dict", ...}``
written by :func:`save_checkpoint` and read back as a model by :func:`load_checkpoint`, which is
how the model zoo loads the trained networks.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from .jobs import ARCHS as ARCH_NAMES

CHECKPOINT_FORMAT = "mice2machines.dg.checkpoint/1"

_BUILDERS: dict[str, Callable[[int], nn.Module]] = {}


def _arch(builder: Callable[[int], nn.Module]) -> Callable[[int], nn.Module]:
    """Register a builder (num_classes -> body) under its name without the leading underscore;
    the name must be one of `jobs.ARCHS` (the torch-free list the config schema allows)."""
    name = builder.__name__.removeprefix("_")
    if name not in ARCH_NAMES:
        raise ValueError(f"architecture {name!r} is not in mice2machines.dg.jobs.ARCHS")
    _BUILDERS[name] = builder
    return builder


class SmallCNN(nn.Module):
    """Three conv blocks (conv 3x3, BN, ReLU, max-pool; 32-64-128 channels), 4 x 4 pool, linear.

    About 10 M multiply-adds per 32 px image: small enough to train on CPU in the demo. The
    4 x 4 spatial head (identity at 32 px; any input size works) learns far faster than a
    global-average-pool head on a few hundred digits.
    """

    def __init__(self, num_classes: int = 10, width: int = 32, dropout: float = 0.2):
        super().__init__()
        w = width

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(),
                nn.MaxPool2d(2),
            )

        self.features = nn.Sequential(block(3, w), block(w, 2 * w), block(2 * w, 4 * w))
        self.pool = nn.AdaptiveAvgPool2d(4)
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Dropout(dropout), nn.Linear(4 * w * 16, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(x)))


def _stride_one(conv: nn.Conv2d) -> nn.Conv2d:
    """Make a stem convolution stride 1 (keeps 32 px inputs from collapsing to 1 x 1)."""
    conv.stride = (1, 1)
    return conv


@_arch
def _small_cnn(num_classes: int) -> nn.Module:
    return SmallCNN(num_classes)


@_arch
def _resnet18(num_classes: int) -> nn.Module:
    from torchvision.models import resnet18

    m = resnet18(weights=None, num_classes=num_classes)
    m.conv1 = nn.Conv2d(3, 64, 3, stride=1, padding=1, bias=False)  # CIFAR-style stem
    m.maxpool = nn.Identity()
    return m


@_arch
def _mnasnet(num_classes: int) -> nn.Module:
    from torchvision.models import mnasnet0_5

    m = mnasnet0_5(weights=None, num_classes=num_classes)
    _stride_one(m.layers[0])
    return m


@_arch
def _mobilenet_v3(num_classes: int) -> nn.Module:
    from torchvision.models import mobilenet_v3_small

    m = mobilenet_v3_small(weights=None, num_classes=num_classes)
    _stride_one(m.features[0][0])
    return m


@_arch
def _efficientnet_b0(num_classes: int) -> nn.Module:
    from torchvision.models import efficientnet_b0

    m = efficientnet_b0(weights=None, num_classes=num_classes)
    _stride_one(m.features[0][0])
    return m


@_arch
def _vit(num_classes: int) -> nn.Module:
    """ViT for 32 px: 4 x 4 patches (64 tokens), 6 layers, width 192, 3 heads (ViT-Tiny width)."""
    from torchvision.models import VisionTransformer

    return VisionTransformer(
        image_size=32,
        patch_size=4,
        num_layers=6,
        num_heads=3,
        hidden_dim=192,
        mlp_dim=384,
        num_classes=num_classes,
    )


ARCHS: dict[str, Callable[[int], nn.Module]] = {name: _BUILDERS[name] for name in ARCH_NAMES}
"""Architecture registry: name -> constructor(num_classes), in the order of `jobs.ARCHS`
(a name there without a builder here fails at import)."""


def _neurn_arg(neurn: None | bool | dict) -> dict | None:
    """Normalise the ``neurn`` argument: None/False -> None, True -> {}, dict -> copy."""
    if neurn is None or neurn is False:
        return None
    if neurn is True:
        return {}
    if isinstance(neurn, dict):
        return dict(neurn)
    raise TypeError(f"neurn must be None, a bool or a dict of NeuRN options, got {neurn!r}")


class DigitNet(nn.Module):
    """``body((neurn(x) - 0.5) / 0.5)``: the same fixed centring for baseline and NeuRN."""

    def __init__(self, arch: str, body: nn.Module, neurn: dict | None = None):
        super().__init__()
        self.arch = arch
        self.neurn_config = neurn
        if neurn is None:
            self.neurn: nn.Module = nn.Identity()
        else:
            from ..neurn import NeuRN

            self.neurn = NeuRN(**neurn)
        self.body = body

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """The fixed, parameter-free part: NeuRN (or nothing), then centring. Training computes
        it once per image (no augmentation), so NeuRN costs no time per step."""
        return (self.neurn(x) - 0.5) / 0.5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(self.prepare(x))


def build(arch: str, num_classes: int = 10, neurn: None | bool | dict = None) -> DigitNet:
    """Build a digit network; ``neurn`` (True or a dict of NeuRN options) puts NeuRN in front."""
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; choose one of {sorted(ARCHS)}")
    return DigitNet(arch, ARCHS[arch](int(num_classes)), _neurn_arg(neurn))


def save_checkpoint(model: DigitNet, path: str | os.PathLike, **extra) -> Path:
    """Write a model checkpoint atomically (temporary file, then rename)."""
    from ..io import atomic_path

    record = {
        "format": CHECKPOINT_FORMAT,
        "arch": model.arch,
        "num_classes": _num_classes(model),
        "neurn": model.neurn_config,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        **extra,
    }
    with atomic_path(path) as tmp:
        torch.save(record, tmp)
    return Path(path)


def _num_classes(model: DigitNet) -> int:
    last = [m for m in model.body.modules() if isinstance(m, nn.Linear)][-1]
    return int(last.out_features)


def read_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """The checkpoint dict, with a clear error naming the file if it is missing or unreadable."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: checkpoint does not exist")
    try:
        record = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:
        raise ValueError(
            f"{path}: not a readable checkpoint ({type(err).__name__}: {err})"
        ) from err
    if not isinstance(record, dict) or not {"arch", "state_dict"} <= set(record):
        raise ValueError(f"{path}: not a mice2machines checkpoint (needs 'arch' and 'state_dict')")
    return record


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> DigitNet:
    """Rebuild the network saved at ``path`` (via :func:`build`) and load its weights; eval mode."""
    record = read_checkpoint(path, map_location)
    model = build(record["arch"], record.get("num_classes", 10), record.get("neurn"))
    model.load_state_dict(record["state_dict"], strict=True)
    return model.eval()
