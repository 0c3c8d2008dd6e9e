"""``module:<target>:<factory>``: a user's function that returns an nn.Module.

``target`` is an importable module (``mylab.nets``) or a Python file (``nets/v1.py``,
relative to the working directory; a Snakemake input of the model's jobs); ``factory`` names
a callable in it (``make_net``, or dotted: ``Nets.small``), called with no arguments after
the build seed is set. Weights ``random`` (what the factory returns) or a state dict
(``file:<path>``, ``ckpt:<path>``) loaded strictly. Preprocessing is the row's
``preprocess``/``resize`` columns (default ``imagenet``, ``squash``: grayscale stimuli
copied to 3 channels, ImageNet mean and std); 1-channel networks take ``gray``.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from pathlib import Path

from ..zoo import ZooError, register_builder


def split(arch: str) -> tuple[str, str]:
    """(target, factory) of ``<target>:<factory>``."""
    target, sep, factory = arch.rpartition(":")
    if not sep or not target or not factory:
        raise ZooError(
            f"module builder {arch!r}: expected module:<import.path or file.py>:<factory>"
        )
    return target, factory


def is_file(target: str) -> bool:
    return target.endswith(".py") or "/" in target


def import_target(target: str):
    """The module of an import path or a .py file (imported once per resolved path)."""
    if not is_file(target):
        try:
            return importlib.import_module(target)
        except ImportError as err:
            raise ZooError(f"cannot import module {target!r}: {err}") from None
    path = Path(target).resolve()
    if not path.is_file():
        raise ZooError(f"module file {target} does not exist")
    name = f"m2m_user_{hashlib.sha1(str(path).encode()).hexdigest()[:10]}_{path.stem}"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as err:
            del sys.modules[name]
            raise ZooError(f"{target}: importing it failed: {type(err).__name__}: {err}") from err
    return sys.modules[name]


def factory(arch: str):
    """The factory callable a row names."""
    target, name = split(arch)
    obj = import_target(target)
    for part in name.split("."):
        if not hasattr(obj, part):
            raise ZooError(f"{target} has no {name!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ZooError(f"{target}:{name} is not callable")
    return obj


def build(arch, pretrained, spec, weights_dir):
    from torch import nn

    model = factory(arch)()
    if not isinstance(model, nn.Module):
        raise ZooError(f"{arch}: the factory returned {type(model).__name__}, not an nn.Module")
    return model


def check(spec) -> None:
    split(spec.arch)


def validate(spec) -> None:
    """The module imports and the factory exists (nothing is built)."""
    factory(spec.arch)


def files(spec) -> list[str]:
    target = split(spec.arch)[0]
    return [target] if is_file(target) else []


register_builder("module", build, validate=validate, check=check, files=files)
