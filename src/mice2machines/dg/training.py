"""One domain-generalization training job: (arch, variant, source domain, seed).

Follows DomainBed's protocol: train on one source domain, select the checkpoint on a held-out
split of that source domain only (training-domain validation), then evaluate the selected
network on every target domain. Deterministic given the seed: the validation split, the
initial weights and each epoch's batch order and dropout draws derive from (seed, epoch), so
a job resumed from its per-epoch checkpoint ends with exactly the metrics of an uninterrupted
run. The baseline and NeuRN variants of one seed share split, batch order and initial weights
(NeuRN has no parameters): a paired comparison.

Files in the job directory: ``state.pt`` (written atomically after every epoch; the resume
point, removed on success unless ``keep_state``), ``best.pt`` (the selected network, loadable
with :func:`mice2machines.dg.networks.load_checkpoint`) and ``metrics.json``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import domains, networks

VARIANTS = ("baseline", "neurn")
_RUN_KEYS = ("device", "threads", "eval_batch_size")  # settings that never change the result


@dataclass
class TrainConfig:
    """Everything that defines a job (defaults: DomainBed's digit settings, Adam 1e-3, 64)."""

    arch: str = "small_cnn"
    variant: str = "baseline"
    source: str = "mnist"
    seed: int = 0
    epochs: int = 5
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.0
    optimizer: str = "adam"  # adam | sgd (momentum 0.9)
    schedule: str = "constant"  # constant | cosine (per epoch)
    val_fraction: float = 0.2
    max_samples: int | None = None  # source samples used (train + val); None = all
    max_eval: int | None = None  # samples evaluated per target; None = all
    neurn: dict = field(
        default_factory=lambda: {"kernel_size": 5, "max_over": "image", "padding": "reflect"}
    )
    precision: str = "fp32"  # fp32 | bf16 (autocast, CUDA only)
    prepare_once: bool = True  # NeuRN + centring computed once per image, not every step
    deterministic: bool = True
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    threads: int | None = None  # torch CPU threads; None = torch's default
    eval_batch_size: int = 512

    def __post_init__(self):
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {self.variant!r}")
        if self.arch not in networks.ARCHS:
            raise ValueError(f"unknown arch {self.arch!r}; choose one of {sorted(networks.ARCHS)}")
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        if self.optimizer not in ("adam", "sgd") or self.schedule not in ("constant", "cosine"):
            raise ValueError(f"bad optimizer/schedule: {self.optimizer!r}/{self.schedule!r}")
        if self.precision not in ("fp32", "bf16"):
            raise ValueError(f"precision must be fp32 or bf16, got {self.precision!r}")

    @classmethod
    def from_dict(cls, d: Mapping) -> TrainConfig:
        """Build from a (config) mapping, ignoring keys that are not fields."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def neurn_settings(self) -> dict | None:
        return dict(self.neurn or {}) if self.variant == "neurn" else None

    def result_key(self) -> dict:
        """The settings that determine the result (device and threads excluded)."""
        d = dataclasses.asdict(self)
        for k in _RUN_KEYS:
            d.pop(k)
        return d


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
    """Deterministic kernels where torch has them (warn, not fail, where it has none)."""
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(enabled, warn_only=True)
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


def _lr_at(cfg: TrainConfig, epoch: int) -> float:
    if cfg.schedule == "cosine":
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * (epoch - 1) / cfg.epochs))
    return cfg.lr


def _optimizer(cfg: TrainConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            model.parameters(), lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay
        )
    return torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)


def _save_state(path: Path, state: dict) -> None:
    from ..io import atomic_path

    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def _load_state(path: Path, key: dict, log: logging.Logger) -> dict | None:
    """The resume point in ``path`` if it belongs to this very job, else None (logged)."""
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        log.warning("%s: unreadable checkpoint (%s); starting from scratch", path, err)
        return None
    if state.get("key") != key:
        log.warning("%s: checkpoint of different settings or data; starting from scratch", path)
        return None
    return state


def run_job(
    cfg: TrainConfig,
    source_path: str | os.PathLike,
    target_paths: Mapping[str, str | os.PathLike],
    out_dir: str | os.PathLike,
    log: logging.Logger | None = None,
    keep_state: bool = False,
    on_epoch: Callable[[int, dict], None] | None = None,
    on_batch: Callable[[int, int], None] | None = None,
) -> dict:
    """Train, select on source validation, evaluate on targets; returns (and writes) metrics.

    ``target_paths``: target domain name -> store path; the source itself may be a target
    (it is then scored on its held-out validation split). ``on_epoch(epoch, history_row)`` runs
    after each epoch's checkpoint, ``on_batch(epoch, batch)`` after each step (hooks for tests
    and progress bars).
    """
    from ..io import code_version

    log = log or logging.getLogger("mice2machines.dg.training")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    set_determinism(cfg.deterministic)
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    device = select_device(cfg.device, log)
    autocast = cfg.precision == "bf16" and device.type == "cuda"

    src = domains.load_domain(source_path)
    X, y = domains.domain_arrays(src, "source")
    src_sum = domains.domain_checksum(src)
    train_idx, val_idx = split_source(len(y), cfg.seed, cfg.val_fraction, cfg.max_samples)
    Xtr, ytr = (
        torch.from_numpy(X[train_idx]).to(device),
        torch.from_numpy(y[train_idx]).to(device),
    )
    Xva, yva = (torch.from_numpy(X[val_idx]).to(device), torch.from_numpy(y[val_idx]).to(device))
    del X, y
    n_train = len(train_idx)
    bs = min(cfg.batch_size, n_train)
    steps = n_train // bs  # the incomplete last batch is dropped (BatchNorm needs > 1 sample)
    log.info(
        "job %s/%s source=%s seed=%d: %d train, %d val samples, %d steps/epoch on %s",
        cfg.arch,
        cfg.variant,
        cfg.source,
        cfg.seed,
        n_train,
        len(val_idx),
        steps,
        device,
    )

    torch.manual_seed(_mix(cfg.seed, 0))
    model = networks.build(cfg.arch, domains.NUM_CLASSES, cfg.neurn_settings()).to(device)
    opt = _optimizer(cfg, model)
    key = {"config": cfg.result_key(), "source_sha256": src_sum}
    state_path = out / "state.pt"
    history: list[dict] = []
    best = {"epoch": 0, "val_acc": -1.0, "state_dict": None}
    start = 1
    resumed = _load_state(state_path, key, log)
    if resumed is not None:
        model.load_state_dict(resumed["model"])
        opt.load_state_dict(resumed["optimizer"])
        history, best = resumed["history"], resumed["best"]
        start = resumed["epoch"] + 1
        log.info("resumed from %s after epoch %d", state_path, resumed["epoch"])

    net, train_in, val_in = model, Xtr, Xva
    if cfg.prepare_once:
        t0 = time.perf_counter()
        train_in = prepare_inputs(model, Xtr, cfg.eval_batch_size)
        val_in = prepare_inputs(model, Xva, cfg.eval_batch_size)
        net = model.body
        del Xtr, Xva
        log.info(
            "inputs prepared once per image (%s) in %.1f s",
            "NeuRN + centring" if cfg.variant == "neurn" else "centring",
            time.perf_counter() - t0,
        )

    train_seconds = 0.0
    for epoch in range(start, cfg.epochs + 1):
        t0 = time.perf_counter()
        for g in opt.param_groups:
            g["lr"] = _lr_at(cfg, epoch)
        order = torch.randperm(
            n_train, generator=torch.Generator().manual_seed(_mix(cfg.seed, 2, epoch))
        ).to(device)
        torch.manual_seed(_mix(cfg.seed, 3, epoch))  # dropout and any other draws
        hook = (lambda b, e=epoch: on_batch(e, b)) if on_batch else None
        loss_sum, correct = train_epoch(net, opt, train_in, ytr, order, bs, autocast, hook)
        n_seen = steps * bs
        val = evaluate(net, val_in, yva, cfg.eval_batch_size, autocast)
        dt = time.perf_counter() - t0
        train_seconds += dt
        row = {
            "epoch": epoch,
            "lr": _lr_at(cfg, epoch),
            "train_loss": loss_sum / n_seen,
            "train_acc": correct / n_seen,
            "val_loss": val["loss"],
            "val_acc": val["acc"],
        }
        history.append(row)
        if val["acc"] > best["val_acc"]:  # ties keep the earlier epoch
            best = {
                "epoch": epoch,
                "val_acc": val["acc"],
                "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
            }
        _save_state(
            state_path,
            {
                "key": key,
                "epoch": epoch,
                "model": model.state_dict(),
                "optimizer": opt.state_dict(),
                "history": history,
                "best": best,
            },
        )
        log.info(
            "epoch %d/%d train_loss %.4f train_acc %.4f val_acc %.4f (best %.4f @%d) "
            "%.1f s, %.0f img/s",
            epoch,
            cfg.epochs,
            row["train_loss"],
            row["train_acc"],
            row["val_acc"],
            best["val_acc"],
            best["epoch"],
            dt,
            n_seen / dt,
        )
        if on_epoch:
            on_epoch(epoch, row)

    # the selected network (training-domain validation) on every target
    model.load_state_dict(best["state_dict"])
    targets = {}
    for name, path in target_paths.items():
        if name == cfg.source:
            res = evaluate(net, val_in, yva, cfg.eval_batch_size, autocast)
            res["split"] = "source-val"
        else:
            ds = domains.load_domain(path)
            tx, ty = domains.domain_arrays(ds, "target")
            keep = eval_subset(len(ty), cfg.max_eval)
            res = evaluate(
                model,
                torch.from_numpy(tx[keep]),
                torch.from_numpy(ty[keep]),
                cfg.eval_batch_size,
                autocast,
            )
            res["split"] = "test" if (ds["split"].values == domains.SPLIT_TEST).any() else "all"
            res["sha256"] = domains.domain_checksum(ds)
        targets[name] = res
        log.info("target %s: acc %.4f (n=%d, %s)", name, res["acc"], res["n"], res["split"])

    metrics = {
        "arch": cfg.arch,
        "variant": cfg.variant,
        "source": cfg.source,
        "seed": cfg.seed,
        "selected_epoch": best["epoch"],
        "val_acc": best["val_acc"],
        "n_train": n_train,
        "n_val": len(val_idx),
        "history": history,
        "targets": targets,
        "config": cfg.result_key(),
        "source_sha256": src_sum,
        "code_version": code_version(),
        "run": {
            "device": str(device),
            "threads": torch.get_num_threads(),
            "resumed_after_epoch": start - 1,
            "train_seconds_this_run": train_seconds,
        },
    }
    networks.save_checkpoint(
        model,
        out / "best.pt",
        epoch=best["epoch"],
        val_acc=best["val_acc"],
        source=cfg.source,
        seed=cfg.seed,
        variant=cfg.variant,
        config=cfg.result_key(),
    )
    write_json_atomic(metrics, out / "metrics.json")
    if not keep_state:
        state_path.unlink(missing_ok=True)
    return metrics


def write_json_atomic(obj, path: str | os.PathLike) -> Path:
    """JSON file written to a temporary sibling and renamed."""
    from ..io import atomic_path

    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(obj, indent=1, sort_keys=True, default=float))
    return Path(path)


def comparable(metrics: dict) -> dict:
    """Metrics without the run-specific part (device, timing, resume point)."""
    return {k: v for k, v in metrics.items() if k not in ("run", "code_version")}
