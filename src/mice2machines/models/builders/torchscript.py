"""``torchscript:<file>``: a TorchScript network (``torch.jit.save``), weights ``package``
(they are inside the file, whose sha256 goes into the cache key).

TorchScript runs its submodules in C++, where Python hooks cannot reach, so the one layer
is the network's output: ``output`` (its first returned tensor; the default ``layers`` of
these rows is ``names:output``). For inner layers, save a state dict and use its builder
(``module:nets.py:make_net`` with ``file:weights.pt``).
"""

from __future__ import annotations

from pathlib import Path

from ..zoo import ZooError, register_builder


def scripted_class():
    """The wrapper nn.Module (defined on first use: importing the zoo needs no torch)."""
    import torch
    from torch import nn

    class Scripted(nn.Module):
        """A TorchScript network behind an ``output`` Identity; the script is kept out of
        ``named_modules`` (it cannot be hooked) but follows ``train``/``to``."""

        def __init__(self, script):
            super().__init__()
            object.__setattr__(self, "_script", script)
            self.output = nn.Identity()

        def forward(self, x):
            out = self._script(x)
            while isinstance(out, tuple | list):
                out = out[0]
            if isinstance(out, dict):
                out = next(iter(out.values()))
            if not isinstance(out, torch.Tensor):
                raise TypeError(f"TorchScript network returned {type(out).__name__}")
            return self.output(out)

        def train(self, mode: bool = True):
            self._script.train(mode)
            return super().train(mode)

        def _apply(self, fn, recurse=True):
            self._script._apply(fn)
            return super()._apply(fn, recurse)

    return Scripted


def build(arch, pretrained, spec, weights_dir):
    import torch

    path = Path(arch)
    try:
        script = torch.jit.load(str(path), map_location="cpu")
    except (RuntimeError, ValueError) as err:
        raise ZooError(f"{path}: not a TorchScript file: {err}") from None
    return scripted_class()(script)


def check(spec) -> None:
    if spec.weights != "package":
        raise ZooError("TorchScript rows take weights 'package' (the weights are in the file)")


def validate(spec) -> None:
    """The file is a TorchScript archive (a zip holding its code; nothing is loaded)."""
    import zipfile

    if not zipfile.is_zipfile(spec.arch):
        raise ZooError(f"{spec.arch}: not a TorchScript file (torch.jit.save writes a zip)")


register_builder(
    "torchscript",
    build,
    package_weights=True,
    package_file=lambda spec: Path(spec.arch),
    validate=validate,
    check=check,
    files=lambda spec: [spec.arch],
    defaults={"layers": "names:output"},
)
