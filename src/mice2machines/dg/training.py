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
import json
import logging
import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .. import neurn_settings, settings
from . import domains, jobs, networks
from .loop import (
    _mix,
    eval_subset,
    evaluate,
    prepare_inputs,
    select_device,
    set_determinism,
    split_source,
    train_epoch,
)

_DG = settings.defaults("dg")
_TRAIN = _DG["train"]  # every train default, from schemas/dg.schema.yaml
VARIANTS = tuple(settings.schema("dg")["properties"]["variants"]["items"]["enum"])


@dataclass
class TrainConfig:
    """Everything that defines a job: its cell of the sweep, its NeuRN settings (``dg.neurn``)
    and its train settings (``dg.train``).

    Defaults come from the config schema: the train keys' own, NeuRN's, and for the job keys
    the first of the default sweep. Values are checked against the same schema."""

    arch: str = _DG["archs"][0]
    variant: str = _DG["variants"][0]
    source: str = _DG["sources"][0]
    seed: int = _DG["seeds"][0]
    neurn: dict | None = None  # None = the NeuRN defaults
    epochs: int = _TRAIN["epochs"]
    batch_size: int = _TRAIN["batch_size"]
    lr: float = _TRAIN["lr"]
    weight_decay: float = _TRAIN["weight_decay"]
    optimizer: str = _TRAIN["optimizer"]
    schedule: str = _TRAIN["schedule"]
    val_fraction: float = _TRAIN["val_fraction"]
    max_samples: int | None = _TRAIN["max_samples"]
    max_eval: int | None = _TRAIN["max_eval"]
    precision: str = _TRAIN["precision"]
    prepare_once: bool = _TRAIN["prepare_once"]
    deterministic: bool = _TRAIN["deterministic"]
    device: str = _TRAIN["device"]
    threads: int | None = _TRAIN["threads"]
    eval_batch_size: int = _TRAIN["eval_batch_size"]

    def __post_init__(self):
        self.neurn = neurn_settings.settings(True if self.neurn is None else self.neurn)
        job = {"archs": [self.arch], "variants": [self.variant], "sources": [self.source]}
        settings.check("dg", {**job, "seeds": [self.seed], "train": self.train_settings()})

    @classmethod
    def from_dict(cls, d: Mapping) -> TrainConfig:
        """Build from a (config) mapping, ignoring keys that are not fields."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def train_settings(self) -> dict:
        """The ``dg.train`` part."""
        return {k: getattr(self, k) for k in _TRAIN}

    def applied_neurn(self) -> dict | None:
        """The NeuRN settings the job's network applies (None for the baseline)."""
        return dict(self.neurn) if self.variant == "neurn" else None

    def result_key(self) -> dict:
        """The settings that determine the result (device and threads excluded)."""
        return jobs.result_settings(dataclasses.asdict(self))


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


@dataclass
class SourceData:
    """A job's source domain on its device: train and validation inputs and labels.

    The inputs are uint8 images for the whole model, or prepared floats for its body after
    :func:`prepare_source` (then ``prepared`` is True)."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    sha256: str
    prepared: bool = False

    @property
    def n_train(self) -> int:
        return len(self.train_y)

    @property
    def n_val(self) -> int:
        return len(self.val_y)


@dataclass
class FitState:
    """Where training stands: the epochs' history, the best epoch so far (its weights on the
    CPU) and the first epoch this run trains (after a resume: the one after the checkpoint)."""

    history: list[dict] = field(default_factory=list)
    best: dict = field(default_factory=lambda: {"epoch": 0, "val_acc": -1.0, "state_dict": None})
    start: int = 1
    train_seconds: float = 0.0


def _setup(cfg: TrainConfig, log: logging.Logger) -> torch.device:
    """Determinism, CPU threads and the device of a job."""
    set_determinism(cfg.deterministic)
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    return select_device(cfg.device, log)


def load_source(cfg: TrainConfig, path: str | os.PathLike, device: torch.device) -> SourceData:
    """The job's seeded train/validation split of the source domain, moved to ``device``."""
    src = domains.load_domain(path)
    X, y = domains.domain_arrays(src, "source")
    train_idx, val_idx = split_source(len(y), cfg.seed, cfg.val_fraction, cfg.max_samples)
    return SourceData(
        torch.from_numpy(X[train_idx]).to(device),
        torch.from_numpy(y[train_idx]).to(device),
        torch.from_numpy(X[val_idx]).to(device),
        torch.from_numpy(y[val_idx]).to(device),
        domains.domain_checksum(src),
    )


def prepare_source(
    cfg: TrainConfig, model: networks.DigitNet, data: SourceData, log: logging.Logger
) -> torch.nn.Module:
    """The network the epochs train: ``model.body`` on inputs prepared once (``prepare_once``;
    the uint8 images are replaced in ``data``), else ``model`` itself."""
    if not cfg.prepare_once:
        return model
    t0 = time.perf_counter()
    data.train_x = prepare_inputs(model, data.train_x, cfg.eval_batch_size)
    data.val_x = prepare_inputs(model, data.val_x, cfg.eval_batch_size)
    data.prepared = True
    log.info(
        "inputs prepared once per image (%s) in %.1f s",
        "NeuRN + centring" if cfg.variant == "neurn" else "centring",
        time.perf_counter() - t0,
    )
    return model.body


def _resume(
    path: Path,
    key: dict,
    model: torch.nn.Module,
    opt: torch.optim.Optimizer,
    log: logging.Logger,
) -> FitState:
    """The fit state of this job's checkpoint (weights and optimizer loaded), or a fresh one."""
    resumed = _load_state(path, key, log)
    if resumed is None:
        return FitState()
    model.load_state_dict(resumed["model"])
    opt.load_state_dict(resumed["optimizer"])
    log.info("resumed from %s after epoch %d", path, resumed["epoch"])
    return FitState(resumed["history"], resumed["best"], resumed["epoch"] + 1)


def _epoch(
    cfg: TrainConfig,
    epoch: int,
    net: torch.nn.Module,
    opt: torch.optim.Optimizer,
    data: SourceData,
    autocast: bool,
    on_batch: Callable[[int, int], None] | None,
) -> tuple[dict, int]:
    """Train one epoch in its seeded batch order, then score the validation split; returns
    the epoch's history row and the number of images it trained on."""
    for g in opt.param_groups:
        g["lr"] = _lr_at(cfg, epoch)
    bs = min(cfg.batch_size, data.n_train)
    order = torch.randperm(
        data.n_train, generator=torch.Generator().manual_seed(_mix(cfg.seed, 2, epoch))
    ).to(data.train_y.device)
    torch.manual_seed(_mix(cfg.seed, 3, epoch))  # dropout and any other draws
    hook = (lambda b: on_batch(epoch, b)) if on_batch else None
    loss_sum, correct = train_epoch(net, opt, data.train_x, data.train_y, order, bs, autocast, hook)
    n_seen = (data.n_train // bs) * bs
    val = evaluate(net, data.val_x, data.val_y, cfg.eval_batch_size, autocast)
    row = {
        "epoch": epoch,
        "lr": _lr_at(cfg, epoch),
        "train_loss": loss_sum / n_seen,
        "train_acc": correct / n_seen,
        "val_loss": val["loss"],
        "val_acc": val["acc"],
    }
    return row, n_seen


def fit(
    cfg: TrainConfig,
    model: networks.DigitNet,
    net: torch.nn.Module,
    opt: torch.optim.Optimizer,
    data: SourceData,
    state: FitState,
    checkpoint: Callable[[int, FitState], None],
    autocast: bool,
    log: logging.Logger,
    on_epoch: Callable[[int, dict], None] | None = None,
    on_batch: Callable[[int, int], None] | None = None,
) -> FitState:
    """The epochs from ``state.start``: train, keep the best on validation (ties keep the
    earlier epoch), ``checkpoint(epoch, state)`` after each."""
    for epoch in range(state.start, cfg.epochs + 1):
        t0 = time.perf_counter()
        row, n_seen = _epoch(cfg, epoch, net, opt, data, autocast, on_batch)
        dt = time.perf_counter() - t0
        state.train_seconds += dt
        state.history.append(row)
        if row["val_acc"] > state.best["val_acc"]:
            weights = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            state.best = {"epoch": epoch, "val_acc": row["val_acc"], "state_dict": weights}
        checkpoint(epoch, state)
        log.info(
            "epoch %d/%d train_loss %.4f train_acc %.4f val_acc %.4f (best %.4f @%d) "
            "%.1f s, %.0f img/s",
            epoch,
            cfg.epochs,
            row["train_loss"],
            row["train_acc"],
            row["val_acc"],
            state.best["val_acc"],
            state.best["epoch"],
            dt,
            n_seen / dt,
        )
        if on_epoch:
            on_epoch(epoch, row)
    return state


def evaluate_targets(
    cfg: TrainConfig,
    model: networks.DigitNet,
    net: torch.nn.Module,
    data: SourceData,
    target_paths: Mapping[str, str | os.PathLike],
    autocast: bool,
    log: logging.Logger,
) -> dict[str, dict]:
    """Scores of the selected network per target: the source on its validation split, every
    other domain on its test split (all of it when it has none), capped at ``max_eval``."""
    targets = {}
    for name, path in target_paths.items():
        if name == cfg.source:
            res = evaluate(net, data.val_x, data.val_y, cfg.eval_batch_size, autocast)
            res["split"] = "source-val"
        else:
            ds = domains.load_domain(path)
            tx, ty = domains.domain_arrays(ds, "target")
            keep = eval_subset(len(ty), cfg.max_eval)
            x, y = torch.from_numpy(tx[keep]), torch.from_numpy(ty[keep])
            res = evaluate(model, x, y, cfg.eval_batch_size, autocast)
            res["split"] = "test" if (ds["split"].values == domains.SPLIT_TEST).any() else "all"
            res["sha256"] = domains.domain_checksum(ds)
        targets[name] = res
        log.info("target %s: acc %.4f (n=%d, %s)", name, res["acc"], res["n"], res["split"])
    return targets


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

    data (:func:`load_source`) -> fit (:func:`fit`, resumed from ``state.pt``) -> evaluate
    (:func:`evaluate_targets`) -> ``best.pt`` and ``metrics.json``. ``target_paths``: target
    domain name -> store path; the source itself may be a target (it is then scored on its
    held-out validation split). ``on_epoch(epoch, history_row)`` runs after each epoch's
    checkpoint, ``on_batch(epoch, batch)`` after each step (hooks for tests and progress bars).
    """
    log = log or logging.getLogger("mice2machines.dg.training")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = _setup(cfg, log)
    autocast = cfg.precision == "bf16" and device.type == "cuda"

    data = load_source(cfg, source_path, device)
    _log_job(cfg, data, device, log)
    torch.manual_seed(_mix(cfg.seed, 0))
    model = networks.build(cfg.arch, domains.NUM_CLASSES, cfg.applied_neurn()).to(device)
    opt = _optimizer(cfg, model)
    key = {"config": cfg.result_key(), "source_sha256": data.sha256}
    state_path = out / "state.pt"
    state = _resume(state_path, key, model, opt, log)
    net = prepare_source(cfg, model, data, log)

    def checkpoint(epoch: int, st: FitState) -> None:
        _save_state(
            state_path,
            {
                "key": key,
                "epoch": epoch,
                "model": model.state_dict(),
                "optimizer": opt.state_dict(),
                "history": st.history,
                "best": st.best,
            },
        )

    state = fit(cfg, model, net, opt, data, state, checkpoint, autocast, log, on_epoch, on_batch)

    model.load_state_dict(state.best["state_dict"])
    targets = evaluate_targets(cfg, model, net, data, target_paths, autocast, log)
    metrics = _metrics(cfg, data, state, targets, device)
    networks.save_checkpoint(
        model,
        out / "best.pt",
        epoch=state.best["epoch"],
        val_acc=state.best["val_acc"],
        source=cfg.source,
        seed=cfg.seed,
        variant=cfg.variant,
        config=cfg.result_key(),
    )
    write_json_atomic(metrics, out / "metrics.json")
    if not keep_state:
        state_path.unlink(missing_ok=True)
    return metrics


def _log_job(cfg: TrainConfig, data: SourceData, device: torch.device, log) -> None:
    bs = min(cfg.batch_size, data.n_train)
    log.info(
        "job %s/%s source=%s seed=%d: %d train, %d val samples, %d steps/epoch on %s",
        cfg.arch,
        cfg.variant,
        cfg.source,
        cfg.seed,
        data.n_train,
        data.n_val,
        data.n_train // bs,  # the incomplete last batch is dropped (BatchNorm needs > 1 sample)
        device,
    )


def _metrics(
    cfg: TrainConfig, data: SourceData, state: FitState, targets: dict, device: torch.device
) -> dict:
    """The job's metrics record (``run``: what depends on this very run, not the result)."""
    from ..io import code_version

    return {
        "arch": cfg.arch,
        "variant": cfg.variant,
        "source": cfg.source,
        "seed": cfg.seed,
        "selected_epoch": state.best["epoch"],
        "val_acc": state.best["val_acc"],
        "n_train": data.n_train,
        "n_val": data.n_val,
        "history": state.history,
        "targets": targets,
        "config": cfg.result_key(),
        "source_sha256": data.sha256,
        "code_version": code_version(),
        "run": {
            "device": str(device),
            "threads": torch.get_num_threads(),
            "resumed_after_epoch": state.start - 1,
            "train_seconds_this_run": state.train_seconds,
        },
    }


def write_json_atomic(obj, path: str | os.PathLike) -> Path:
    """JSON file written to a temporary sibling and renamed."""
    from ..io import atomic_path

    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(obj, indent=1, sort_keys=True, default=float))
    return Path(path)


def comparable(metrics: dict) -> dict:
    """Metrics without the run-specific part (device, timing, resume point)."""
    return {k: v for k, v in metrics.items() if k not in ("run", "code_version")}
