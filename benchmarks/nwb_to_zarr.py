"""NWB -> zarr on a real-size synthetic session against a bare h5py read of the same data.

Real-size: 250 cells, ~115,000 frames, 5950 natural-scene presentations (50 x 118 + blanks).
Each measurement runs in a fresh subprocess (imports outside the timed region) and reads its
peak RSS from VmHWM (ru_maxrss survives exec and would report the parent's peak).

Warm: the file is in the page cache for both sides. Cold: before each measurement the NWB
file and the previous outputs are dropped from the page cache (written back, then
posix_fadvise DONTNEED, which needs no root); the file's resident size is checked after the
drop (fincore, where installed). `--src` times other source trees (the code before a
change, say) on the same file, in turns. `--phases` prints where one conversion spends its time.

    python benchmarks/nwb_to_zarr.py [--cells 250] [--frames 115000] [--repeats 3]
        [--cache warm cold] [--src DIR ...] [--phases]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from mice2machines import synthetic  # noqa: E402
from mice2machines.neural.nwb import CELL_IDS, DFF, DFF_TIME  # noqa: E402

PROBE = """
import sys, time, json, resource
sys.path.insert(0, {src!r})
def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM"):
            return int(line.split()[1])
def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime
"""

BARE = (
    PROBE
    + """
import h5py, numpy as np
path = {path!r}
base, c = hwm(), cpu()
t = time.perf_counter()
with h5py.File(path, "r") as f:
    dff = f[{dff!r}][()]
    ts = f[{ts!r}][()]
    ids = f[{ids!r}][()]
    g = f["stimulus/presentation/natural_scenes_stimulus"]
    data, fd = g["data"][()], g["frame_duration"][()]
dt = time.perf_counter() - t
print(json.dumps({{"seconds": dt, "cpu": cpu() - c, "rss_increase_mb": (hwm() - base) / 1024}}))
"""
)

CONVERT = (
    PROBE
    + """
from mice2machines.neural import convert as neural
from mice2machines.neural import nwb
import xarray, zarr, dask.array, jsonschema  # imports outside the timed region
base, c = hwm(), cpu()
t = time.perf_counter()
s = nwb.read_session({path!r})
neural.convert_session(s, {out!r}, {{"cell_block": {block}, "store_trials": {trials}}},
                       hash_input={hash_input})
dt = time.perf_counter() - t
print(json.dumps({{"seconds": dt, "cpu": cpu() - c, "rss_increase_mb": (hwm() - base) / 1024}}))
"""
)

#: functions timed by --phases: (module under mice2machines.neural, name)
PHASES = (
    ("nwb", "read_session"),
    ("convert", "settings"),
    ("convert", "session_skeleton"),
    ("convert", "_attrs"),
    ("convert", "_write_skeleton"),
    ("convert", "bad_cells"),
    ("convert", "presentation_responses"),
    ("convert", "trial_windows"),
    ("convert", "_write_blocks"),
    ("convert", "consolidate"),
)

PHASE_RUN = (
    PROBE
    + """
import functools, importlib, numpy as np
import xarray, zarr, dask.array, jsonschema
from mice2machines.neural import convert as neural
from mice2machines.neural import nwb
spent = {{}}
def timed(mod, name):
    f = getattr(mod, name, None)
    if f is None:
        return
    @functools.wraps(f)
    def g(*a, **k):
        t = time.perf_counter()
        try:
            return f(*a, **k)
        finally:
            spent[name] = spent.get(name, 0.0) + time.perf_counter() - t
    setattr(mod, name, g)
for m, n in {phases!r}:
    timed(importlib.import_module("mice2machines.neural." + m), n)
read = nwb.Session.dff_blocks
def blocks(self, b):
    it = read(self, b)
    while True:
        t = time.perf_counter()
        item = next(it, None)
        spent["dF/F block reads"] = spent.get("dF/F block reads", 0.0) + time.perf_counter() - t
        if item is None:
            return
        yield item
nwb.Session.dff_blocks = blocks
t = time.perf_counter()
s = nwb.read_session({path!r})
neural.convert_session(s, {out!r}, {{"cell_block": {block}, "store_trials": {trials}}},
                       hash_input=False)
spent["total"] = time.perf_counter() - t
print(json.dumps(spent))
"""
)


def run(code: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def drop_cache(*paths: Path) -> None:
    """Write back and evict files (or every file under folders) from the page cache."""
    os.sync()
    for p in paths:
        files = [p] if p.is_file() else [f for f in p.rglob("*") if f.is_file()]
        for f in files:
            fd = os.open(f, os.O_RDONLY)
            try:
                os.fdatasync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def resident_mb(path: Path) -> float | None:
    """How much of a file is in the page cache (fincore), or None without fincore."""
    if not shutil.which("fincore"):
        return None
    out = subprocess.run(
        ["fincore", "--bytes", "--noheadings", "--output", "RES", str(path)],
        capture_output=True,
        text=True,
    )
    return int(out.stdout.split()[0]) / 2**20 if out.returncode == 0 else None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cells", type=int, default=250)
    ap.add_argument("--frames", type=int, default=115_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--block", type=int, default=32)
    ap.add_argument("--cache", nargs="+", choices=("warm", "cold"), default=["warm", "cold"])
    ap.add_argument(
        "--src",
        type=lambda p: Path(p).resolve(),
        nargs="+",
        default=[ROOT / "src"],
        help="source trees to time",
    )
    ap.add_argument("--phases", action="store_true", help="time the conversion's phases")
    ap.add_argument("--nwb", type=Path, help="an existing session file (else one is written)")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="m2m-bench-") as tmp:
        tmp = Path(tmp)
        path = a.nwb or write_session(a, tmp)
        machine(a, path)
        for cache in a.cache:
            report(a, tmp, path, cache)
        if a.phases:
            for src in a.src:
                phases(a, tmp, path, src)


def write_session(a: argparse.Namespace, tmp: Path) -> Path:
    images = synthetic.make_stimuli(64, 80, seed=0)
    exp = synthetic.Experiment(
        900_000_000, 800_000_000, "VISp", "Cux2-CreERT2", 175, a.cells, seed=1
    )
    presentation_frames = 120 + int(5950 * synthetic.PRESENTATION_PERIOD_FRAMES) + 7
    session = synthetic.simulate_session(
        exp, images, 50, tail_frames=max(a.frames - presentation_frames, 120)
    )
    path = tmp / "900000000.nwb"
    synthetic.write_nwb(path, exp, session, images)
    return path


def machine(a: argparse.Namespace, path: Path) -> None:
    import h5py

    with h5py.File(path, "r") as f:
        n_cells, n_frames = f[DFF].shape
    print(
        f"machine: {platform.node()} {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, python {platform.python_version()}, "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    print(
        f"session: {n_cells} cells x {n_frames} frames, dF/F {n_cells * n_frames * 4 / 2**20:.0f} "
        f"MiB, file {path.stat().st_size / 2**20:.0f} MiB, cell block {a.block}"
    )


def report(a: argparse.Namespace, tmp: Path, path: Path, cache: str) -> None:
    """Median (and best) time of the bare read and of each conversion, warm or cold; the
    source trees take turns within each repeat, so a change in the machine's load hits all
    of them alike."""
    fmt = {"path": str(path), "dff": DFF, "ts": DFF_TIME, "ids": CELL_IDS}
    variants = (("bare", None, None), ("r", False, False), ("t", True, False), ("h", True, True))
    rows = {src: [] for src in a.src}
    resident = []
    for i in range(a.repeats):
        for src in a.src:
            rows[src].append([])
        for tag, trials, hashed in variants:
            for k, src in enumerate(a.src):
                if cache == "cold":
                    drop_cache(path, *tmp.glob("*.zarr"))
                    resident.append(resident_mb(path))
                else:
                    path.read_bytes()
                out = tmp / f"{tag}{i}-{k}.zarr"
                code = (
                    BARE.format(**fmt, src=str(src))
                    if tag == "bare"
                    else CONVERT.format(
                        **fmt,
                        src=str(src),
                        out=str(out),
                        block=a.block,
                        hash_input=hashed,
                        trials=trials,
                    )
                )
                rows[src][-1].append(run(code))
                shutil.rmtree(out, ignore_errors=True)
    known = [r for r in resident if r is not None]
    checked = f", at most {max(known):.1f} MiB of the file resident after a drop" if known else ""
    steps = (
        "bare h5py read of the same datasets",
        "convert, responses only (store_trials: false)",
        "convert + trials",
        "convert + trials + sha256 of the input file",
    )
    for src in a.src:
        runs = rows[src]
        print(f"\n{cache} cache, source {src} ({a.repeats} repeats{checked}):")
        print("| step | median s | ratio to bare read | best s | CPU s | peak RSS increase MiB |")
        print("|---|---|---|---|---|---|")
        b = _stat(runs, 0, "seconds")
        for j, name in enumerate(steps):
            t, c, m = (_stat(runs, j, k) for k in ("seconds", "cpu", "rss_increase_mb"))
            best = _stat(runs, j, "seconds", np.min)
            print(f"| {name} | {t:.3f} | {t / b:.2f} | {best:.3f} | {c:.3f} | {m:.0f} |")


def _stat(runs: list, step: int, key: str, how=np.median) -> float:
    return float(how([r[step][key] for r in runs]))


def phases(a: argparse.Namespace, tmp: Path, path: Path, src: Path) -> None:
    """Seconds per phase of one conversion (warm cache), responses only and with trials."""
    path.read_bytes()
    for trials in (False, True):
        out = tmp / f"phases{int(trials)}.zarr"
        spent = run(
            PHASE_RUN.format(
                src=str(src),
                path=str(path),
                out=str(out),
                block=a.block,
                trials=trials,
                phases=PHASES,
            )
        )
        shutil.rmtree(out)
        parts = ", ".join(f"{k} {v:.3f}" for k, v in spent.items())
        print(f"\nphases, source {src}, store_trials {trials}: {parts}")


if __name__ == "__main__":
    main()
