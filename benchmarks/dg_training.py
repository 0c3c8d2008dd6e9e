"""DG training throughput with and without NeuRN in front, same run; and the demo sweep's wall time.

Throughput: for each architecture, baseline and NeuRN models built from one seed train on the
same in-memory uint8 digits with ``mice2machines.dg.loop.train_epoch`` (the jobs' own loop).
Measurements alternate baseline / NeuRN for several rounds (drift hits both alike); reported:
median images per second of each and the NeuRN overhead ``t_neurn / t_baseline - 1``, with
NeuRN in the loop (every step) and as the jobs run it (computed once per image; the one-time
cost is reported as a share of one epoch: a job of E epochs pays 1/E of it).
No zarr needed (the device machine has none): the images are random uint8, and speed does
not depend on what they show.

    PYTHONPATH=src python benchmarks/dg_training.py --archs small_cnn --threads 2      # CPU
    PYTHONPATH=src python benchmarks/dg_training.py --archs small_cnn resnet18 ... --precision fp32 bf16
    PYTHONPATH=src python benchmarks/dg_training.py --sweep     # wall time of the demo DG sweep
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from mice2machines import neurn_settings
from mice2machines.dg import loop, networks, training

ROOT = Path(__file__).resolve().parents[1]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def throughput(
    arch: str,
    device: torch.device,
    batch_size: int,
    steps: int,
    rounds: int,
    precision: str,
    neurn: dict,
) -> dict:
    """Median epoch times of baseline and NeuRN, alternated over ``rounds``, two ways:

    ``inloop``: the model on uint8 batches, NeuRN recomputed every step (as with augmentation);
    ``prepared``: what the jobs run (``prepare_once``): NeuRN + centring once per image
    (timed separately as ``prepare``), then the body on the prepared floats.
    """
    n = batch_size * steps
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g).to(device)
    labels = torch.randint(0, 10, (n,), generator=g).to(device)
    order = torch.randperm(n, generator=g).to(device)
    autocast = precision == "bf16" and device.type == "cuda"
    runs = {}
    for variant, nr in (("baseline", None), ("neurn", neurn)):
        torch.manual_seed(0)
        model = networks.build(arch, neurn=nr).to(device)
        opt = torch.optim.Adam(model.parameters(), 1e-3)
        prepared = loop.prepare_inputs(model, images)
        for net, x in ((model, images), (model.body, prepared)):  # warm-up
            loop.train_epoch(net, opt, x, labels, order[: 3 * batch_size], batch_size, autocast)
        runs[variant] = (model, opt)
    times = {(v, k): [] for v in runs for k in ("inloop", "prepared", "prepare")}

    def clock() -> float:
        _sync(device)
        return time.perf_counter()

    for r in range(rounds):
        items = list(runs.items())
        for variant, (model, opt) in items if r % 2 == 0 else items[::-1]:  # ABBA order
            t0 = clock()
            prepared = loop.prepare_inputs(model, images)
            t1 = clock()
            loop.train_epoch(model.body, opt, prepared, labels, order, batch_size, autocast)
            t2 = clock()
            loop.train_epoch(model, opt, images, labels, order, batch_size, autocast)
            t3 = clock()
            times[(variant, "prepare")].append(t1 - t0)
            times[(variant, "prepared")].append(t2 - t1)
            times[(variant, "inloop")].append(t3 - t2)

    def overhead(kind: str) -> float:
        """Median over rounds of the paired ratio t_neurn / t_baseline - 1, in percent."""
        ratios = [
            n / b - 1
            for n, b in zip(times[("neurn", kind)], times[("baseline", kind)], strict=True)
        ]
        return round(100 * statistics.median(ratios), 2)

    med = {k: statistics.median(v) for k, v in times.items()}
    b_in, n_in = med[("baseline", "inloop")], med[("neurn", "inloop")]
    b_pr, n_pr = med[("baseline", "prepared")], med[("neurn", "prepared")]
    extra_prep = med[("neurn", "prepare")] - med[("baseline", "prepare")]
    return {
        "arch": arch,
        "device": str(device),
        "precision": precision if autocast else "fp32",
        "batch_size": batch_size,
        "images": n,
        "rounds": rounds,
        "inloop_baseline_img_s": round(n / b_in, 1),
        "inloop_neurn_img_s": round(n / n_in, 1),
        "inloop_overhead_pct": overhead("inloop"),
        "prepared_baseline_img_s": round(n / b_pr, 1),
        "prepared_neurn_img_s": round(n / n_pr, 1),
        # the same body on same-shaped inputs: ~0 by construction, i.e. the noise floor
        "prepared_step_overhead_pct": overhead("prepared"),
        "neurn_prepare_ms_per_1k_img": round(1e6 * med[("neurn", "prepare")] / n, 3),
        "prepare_extra_pct_of_one_epoch": round(100 * extra_prep / b_pr, 2),
    }


def sweep(cores: int) -> dict:
    """Wall time of the demo config's DG targets (domains, 6 training jobs, table) from scratch."""
    work = Path(tempfile.mkdtemp(prefix="dg-sweep-"))
    try:
        (work / "config").mkdir()
        for f in (ROOT / "config").glob("*"):
            if f.is_file():
                shutil.copy(f, work / "config" / f.name)
        exe = Path(sys.executable).with_name("snakemake")
        cmd = [
            str(exe),
            "-s",
            str(ROOT / "Snakefile"),
            "--directory",
            str(work),
            "--cores",
            str(cores),
            "results/dg/table.csv",
            "results/dg/accuracy.png",
        ]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode:
            raise RuntimeError(proc.stderr[-3000:])
        table = (work / "results" / "dg" / "table.md").read_text()
        return {"sweep_wall_s": round(wall, 1), "cores": cores, "table": table}
    finally:
        shutil.rmtree(work, ignore_errors=True)


KILLABLE = """
import json, logging, os, signal, sys
from mice2machines.dg import training
logging.basicConfig(level=logging.INFO)
cfg, source, targets, out, kill_at = json.loads(sys.argv[1])
def on_batch(epoch, batch):
    if [epoch, batch] == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
training.run_job(training.TrainConfig(**cfg), source, targets, out, on_batch=on_batch)
"""


def resume_check(store_dir: Path, arch: str, epochs: int, device: str) -> dict:
    """A job SIGKILLed in epoch 2 and resumed vs. an uninterrupted one (subprocesses):
    identical metrics? Also the wall time of the uninterrupted job. Needs zarr."""
    stores = {p.stem: str(p) for p in sorted(store_dir.glob("*.zarr"))}
    cfg = {
        "arch": arch,
        "variant": "neurn",
        "seed": 1,
        "epochs": epochs,
        "device": device,
        "batch_size": 64,
    }
    work = Path(tempfile.mkdtemp(prefix="dg-resume-"))
    env = {
        **os.environ,
        "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
    }

    def job(out, kill_at):
        args = json.dumps([cfg, stores["mnist"], stores, str(work / out), kill_at])
        t0 = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-c", KILLABLE, args], env=env, capture_output=True, text=True
        )
        return proc, time.perf_counter() - t0

    try:
        killed, _ = job("killed", [2, 5])
        resumed, _ = job("killed", None)
        clean, wall = job("clean", None)
        if resumed.returncode or clean.returncode:
            raise RuntimeError((resumed.stderr + clean.stderr)[-3000:])
        a = json.loads((work / "killed" / "metrics.json").read_text())
        b = json.loads((work / "clean" / "metrics.json").read_text())
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {
        "resume_check": arch,
        "device": b["run"]["device"],
        "killed_rc": killed.returncode,
        "resumed_after_epoch": a["run"]["resumed_after_epoch"],
        "identical_metrics": training.comparable(a) == training.comparable(b),
        "clean_job_wall_s": round(wall, 1),
        "targets": {t: r["acc"] for t, r in b["targets"].items()},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--archs", nargs="+", default=["small_cnn"], choices=sorted(networks.ARCHS))
    ap.add_argument("--device", default="auto")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=20, help="training steps per measurement")
    ap.add_argument("--rounds", type=int, default=5, help="alternated measurements per variant")
    ap.add_argument("--precision", nargs="+", default=["fp32"], choices=["fp32", "bf16"])
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--sweep", action="store_true", help="time the demo DG sweep instead")
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument(
        "--resume-check",
        type=Path,
        default=None,
        metavar="STORE_DIR",
        help="kill/resume determinism check on the domain stores in STORE_DIR",
    )
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--json", type=Path, default=None, help="also write results here")
    a = ap.parse_args()
    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "machine": platform.machine(),
        "cpus": torch.get_num_threads(),
    }
    if a.resume_check:
        rows = [resume_check(a.resume_check, arch, a.epochs, a.device) for arch in a.archs]
    elif a.sweep:
        res = sweep(a.cores)
        print(res.pop("table"))
        rows = [res]
    else:
        if a.threads:
            torch.set_num_threads(a.threads)
            info["cpus"] = a.threads
        loop.set_determinism(False)  # speed as a user would run it with cudnn autotuning
        device = loop.select_device(a.device)
        if device.type == "cuda":
            info["gpu"] = torch.cuda.get_device_name(device)
        neurn = neurn_settings.default()
        rows = [
            throughput(arch, device, a.batch_size, a.steps, a.rounds, p, neurn)
            for arch in a.archs
            for p in a.precision
        ]
    print(json.dumps(info))
    for r in rows:
        print(json.dumps(r))
    if a.json:
        a.json.write_text(json.dumps({"info": info, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
