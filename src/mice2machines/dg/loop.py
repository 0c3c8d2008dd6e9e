"""The loop of a DG job, one step at a time: seeds, device, the source split, one epoch, one
evaluation. Used by `training.run_job` and, so that what it times is what the jobs run, by the
throughput benchmark."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from . import networks


def _mix(*ints: int) -> int:
    """A 63-bit seed derived from integers (stable across runs and platforms)."""
    h = hashlib.sha256(json.dumps(ints).encode()).digest()
    return int.from_bytes(h[:8], "little") >> 1


def select_device(name: str = "auto", log: logging.Logger | None = None) -> torch.device:
    """ "auto" -> the GPU when there is one, else the CPU (logged: the CPU fallback)."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if log:
            log.info("no GPU visible: training on the CPU")
        return torch.device("cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} asked for but torch sees no GPU (use device: auto)")
    return dev


def set_determinism(enabled: bool) -> None:
    """Deterministic kernels where torch has them (warn, not fail, where it has none).

    The debug mode is ``use_deterministic_algorithms(enabled, warn_only=True)`` without its
    import of torch's compiler (2 s a process), whose setting only torch.compile reads."""
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.set_deterministic_debug_mode("warn" if enabled else "default")
    torch.backends.cudnn.benchmark = not enabled
    torch.backends.cudnn.deterministic = enabled


def split_source(
    n: int, seed: int, val_fraction: float, max_samples: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) indices: a seeded permutation, capped at max_samples, val first."""
    perm = np.random.default_rng(_mix(seed, 1)).permutation(n)
    if max_samples is not None:
        perm = perm[: int(max_samples)]
    n_val = max(1, int(round(val_fraction * len(perm))))
    if len(perm) - n_val < 1:
        raise ValueError(f"too few source samples ({len(perm)}) for a train/val split")
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def eval_subset(n: int, max_eval: int | None) -> np.ndarray:
    """Target samples evaluated: all, or a fixed (seed-independent) subset of max_eval."""
    if max_eval is None or max_eval >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(0).permutation(n)[: int(max_eval)])


def _batch(inputs: torch.Tensor, idx) -> torch.Tensor:
    """A batch as the network takes it: uint8 images are scaled to [0, 1]; prepared float
    inputs (see :func:`prepare_inputs`) are used as they are."""
    xb = inputs[idx]
    return xb.float().div_(255.0) if xb.dtype == torch.uint8 else xb


@torch.no_grad()
def prepare_inputs(
    model: networks.DigitNet, images: torch.Tensor, batch_size: int = 512
) -> torch.Tensor:
    """``model.prepare`` (NeuRN or not, then centring) of uint8 images, in batches: float32.

    NeuRN is a fixed function of each image and the jobs use no augmentation, so computing it
    once per job instead of once per step gives identical inputs at no per-step cost."""
    out = torch.empty(images.shape, dtype=torch.float32, device=images.device)
    for i in range(0, len(images), batch_size):
        out[i : i + batch_size] = model.prepare(images[i : i + batch_size].float().div_(255.0))
    return out


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    batch_size: int = 512,
    autocast: bool = False,
) -> dict:
    """Accuracy and mean cross-entropy of ``model`` on uint8 images (N, 3, H, W) (or of
    ``model.body`` on prepared inputs)."""
    model.eval()
    correct, loss, n = 0, 0.0, len(labels)
    dev = next(model.parameters()).device
    for i in range(0, n, batch_size):
        xb = _batch(images[i : i + batch_size].to(dev, non_blocking=True), slice(None))
        yb = labels[i : i + batch_size].to(dev, non_blocking=True)
        with torch.autocast("cuda", torch.bfloat16, enabled=autocast):
            out = model(xb)
        loss += F.cross_entropy(out.float(), yb, reduction="sum").item()
        correct += (out.argmax(1) == yb).sum().item()
    return {"acc": correct / n, "loss": loss / n, "n": n}


def train_epoch(
    model: torch.nn.Module,
    opt: torch.optim.Optimizer,
    images: torch.Tensor,
    labels: torch.Tensor,
    order: torch.Tensor,
    batch_size: int,
    autocast: bool = False,
    on_batch: Callable[[int], None] | None = None,
) -> tuple[float, int]:
    """One pass over ``order`` in full batches of ``images`` (uint8 for ``model``, or prepared
    floats for ``model.body``), on the model's device.

    Returns (summed loss, correct predictions) over the samples seen. Also used by the
    throughput benchmark, so what it times is what the jobs run."""
    model.train()
    loss_sum = torch.zeros((), device=images.device)
    correct = torch.zeros((), device=images.device, dtype=torch.long)
    for b in range(len(order) // batch_size):
        idx = order[b * batch_size : (b + 1) * batch_size]
        xb, yb = _batch(images, idx), labels[idx]
        with torch.autocast("cuda", torch.bfloat16, enabled=autocast):
            logits = model(xb)
        loss = F.cross_entropy(logits.float(), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss_sum += loss.detach() * len(yb)
        correct += (logits.argmax(1) == yb).sum()
        if on_batch:
            on_batch(b)
    return loss_sum.item(), int(correct.item())
