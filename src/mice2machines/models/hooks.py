"""Choosing, hooking and probing layers: which modules, their outputs, their table."""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

TABLE_COLUMNS = (
    "layer", "module", "call", "type", "order", "depth", "dims", "shape", "features",
    "parameters", "dtype", "duplicate_of", "stored",
)  # fmt: skip


def make_out_of_place(model: nn.Module) -> list[str]:
    """Switch every module with ``inplace=True`` to out-of-place; return their names."""
    changed = []
    for name, m in model.named_modules():
        if isinstance(getattr(m, "inplace", None), bool) and m.inplace:
            m.inplace = False
            changed.append(name)
    return changed


def select_layers(model: nn.Module, mode: str, items: Sequence[str] = ()) -> list[str]:
    """Module names to hook, in registration order.

    ``all``: every leaf module. ``types``: every module that is an instance of a class of
    one of these names (checked along the class's MRO, so ``Conv2d`` also takes subclasses;
    custom block classes such as ``EncoderBlock`` work too). ``names``: exactly these.
    """
    modules = [(n, m) for n, m in model.named_modules() if n]
    if mode == "all":
        chosen = [n for n, m in modules if not any(True for _ in m.children())]
    elif mode == "types":
        wanted = set(items)
        chosen = [n for n, m in modules if wanted & {c.__name__ for c in type(m).__mro__}]
        seen = {c.__name__ for _, m in modules for c in type(m).__mro__}
        if not chosen:
            raise ValueError(f"no module of types {sorted(wanted)}; the model has {sorted(seen)}")
    elif mode == "names":
        have = dict(modules)
        missing = [n for n in items if n not in have]
        if missing:
            raise ValueError(f"no modules named {missing} in the model")
        chosen = list(items)
    else:
        raise ValueError(f"unknown layer selection mode {mode!r}")
    return chosen


def _first_tensor(out):
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)):
        for o in out:
            if isinstance(o, torch.Tensor):
                return o
    return None


def layer_key(name: str, call: int) -> str:
    """Store name of the ``call``-th call of module ``name`` (``name``, ``name@1``, ...)."""
    return name if call == 0 else f"{name}@{call}"


class Recorder:
    """Forward hooks on named modules; each call is passed to ``sink(key, name, call, module, t)``."""

    def __init__(self, model: nn.Module, names: Sequence[str]):
        self.model = model
        self.names = list(names)
        self.calls: Counter = Counter()
        self.sink: Callable | None = None
        self._handles = []

    def __enter__(self):
        modules = dict(self.model.named_modules())
        for name in self.names:
            self._handles.append(modules[name].register_forward_hook(self._hook(name)))
        return self

    def __exit__(self, *exc):
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def _hook(self, name):
        def hook(module, inputs, output):
            call = self.calls[name]
            self.calls[name] += 1
            t = _first_tensor(output)
            if t is not None and self.sink is not None:
                self.sink(layer_key(name, call), name, call, module, t)

        return hook

    def run(self, fn: Callable, sink: Callable):
        """Run ``fn()`` (a forward pass) with ``sink`` receiving every hooked call."""
        self.calls.clear()
        self.sink = sink
        try:
            return fn()
        finally:
            self.sink = None


def _dims(shape: Sequence[int]) -> str:
    return "image,channel,y,x" if len(shape) == 3 else "image,unit"


def _fingerprint(t: torch.Tensor) -> torch.Tensor:
    """Exact, layout-independent fingerprint of a tensor's values (integer sums of its bits)."""
    flat = t.detach().contiguous().reshape(-1)
    bits = flat.view(
        {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[flat.element_size()]
    )
    bits = bits.to(torch.int64)
    weight = torch.arange(bits.numel(), device=bits.device, dtype=torch.int64) % 65521 + 1
    return torch.stack([bits.sum(), (bits * weight).sum()])


def probe(model: nn.Module, forward: Callable, x: torch.Tensor) -> pd.DataFrame:
    """One ``forward(x, sink)``: the layer table, duplicates marked by a hash of their outputs.
    ExtractionError for an output that does not lead with the images (tokens batched by
    window or patch, sequence-first attention): its rows could not be told apart."""
    rows, hashes = [], {}
    params = {n: sum(p.numel() for p in m.parameters()) for n, m in model.named_modules()}
    n_images = int(x.shape[0])

    def sink(key, name, call, module, t):
        if t.dim() == 0 or int(t.shape[0]) != n_images:
            raise ExtractionError(
                f"layer {key} ({type(module).__name__}) outputs {tuple(t.shape)} for "
                f"{n_images} images: it does not lead with the images (tokens batched by "
                "window or patch?); choose other modules in the row's layers column, e.g. "
                "its blocks (types:...)"
            )
        host = t.detach().to("cpu", copy=True).contiguous()
        digest = hashlib.sha1(host.reshape(-1).view(torch.uint8).numpy().tobytes()).hexdigest()
        hkey = (tuple(host.shape), str(host.dtype), digest)
        shape = [int(s) for s in host.shape[1:]]
        rows.append(
            {
                "layer": key,
                "module": name,
                "call": call,
                "type": type(module).__name__,
                "dims": _dims(shape),
                "shape": shape,
                "features": int(np.prod(shape, dtype=np.int64)),
                "parameters": int(params[name]),
                "dtype": str(host.dtype).replace("torch.", ""),
                "duplicate_of": hashes.get(hkey, ""),
            }
        )
        hashes.setdefault(hkey, key)

    forward(x, sink)
    if not rows:
        raise ExtractionError("none of the chosen layers produced a tensor output")
    table = pd.DataFrame(rows)
    table.insert(4, "order", np.arange(len(table)))
    table.insert(5, "depth", table["order"] / max(len(table) - 1, 1))
    table["stored"] = table["duplicate_of"] == ""
    return table[list(TABLE_COLUMNS)]


class ExtractionError(RuntimeError):
    """The extraction produced something inconsistent (e.g. a failed duplicate check)."""
