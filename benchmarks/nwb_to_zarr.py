"""NWB -> zarr on a real-size synthetic session against a bare h5py read of the same data.

Real-size: 250 cells, ~115,000 frames, 5950 natural-scene presentations (50 x 118 + blanks).
Each measurement runs in a fresh subprocess and reads its peak RSS from VmHWM (ru_maxrss
survives exec and would report the parent's peak); the file is read once beforehand so both
sides read from the page cache.

    python benchmarks/nwb_to_zarr.py [--cells 250] [--frames 115000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from mice2machines import synthetic  # noqa: E402
from mice2machines.neural.nwb import CELL_IDS, DFF, DFF_TIME  # noqa: E402

BARE = """
import sys, time, json, h5py, numpy as np
sys.path.insert(0, {src!r})
def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM"):
            return int(line.split()[1])
path = {path!r}
base = hwm()
t = time.perf_counter()
with h5py.File(path, "r") as f:
    dff = f[{dff!r}][()]
    ts = f[{ts!r}][()]
    ids = f[{ids!r}][()]
    g = f["stimulus/presentation/natural_scenes_stimulus"]
    data, fd = g["data"][()], g["frame_duration"][()]
dt = time.perf_counter() - t
peak = hwm()
print(json.dumps({{"seconds": dt, "rss_increase_mb": (peak - base) / 1024}}))
"""

CONVERT = """
import sys, time, json
sys.path.insert(0, {src!r})
def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM"):
            return int(line.split()[1])
from mice2machines.neural import convert as neural
from mice2machines.neural import nwb
import xarray, zarr, dask.array  # imports outside the timed region
base = hwm()
t = time.perf_counter()
s = nwb.read_session({path!r})
neural.convert_session(s, {out!r}, {{"cell_block": {block}, "store_trials": {trials}}},
                       hash_input={hash_input})
dt = time.perf_counter() - t
peak = hwm()
print(json.dumps({{"seconds": dt, "rss_increase_mb": (peak - base) / 1024}}))
"""


def run(code: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cells", type=int, default=250)
    ap.add_argument("--frames", type=int, default=115_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--block", type=int, default=64)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="m2m-bench-") as tmp:
        report(a, Path(tmp))


def report(a: argparse.Namespace, tmp: Path) -> None:
    """Time the conversions of one simulated session written under ``tmp``."""
    images = synthetic.make_stimuli(64, 80, seed=0)
    exp = synthetic.Experiment(
        900_000_000, 800_000_000, "VISp", "Cux2-CreERT2", 175, a.cells, seed=1
    )
    presentation_frames = 120 + int(5950 * synthetic.PRESENTATION_PERIOD_FRAMES) + 7
    session = synthetic.simulate_session(
        exp, images, 50, tail_frames=max(a.frames - presentation_frames, 120)
    )
    path = tmp / "session.nwb"
    synthetic.write_nwb(path, exp, session, images)
    dff_mb = session["dff"].nbytes / 2**20
    del session
    path.read_bytes()  # warm the page cache for both sides
    fmt = {"src": str(ROOT / "src"), "path": str(path), "dff": DFF, "ts": DFF_TIME, "ids": CELL_IDS}
    rows = []
    for i in range(a.repeats):
        bare = run(BARE.format(**fmt))
        variants = []
        for tag, trials, hashed in (("r", False, False), ("t", True, False), ("h", True, True)):
            out = str(tmp / f"{tag}{i}.zarr")
            code = CONVERT.format(**fmt, out=out, block=a.block, hash_input=hashed, trials=trials)
            variants.append(run(code))
        rows.append((bare, *variants))
    med = lambda k, j: float(np.median([r[j][k] for r in rows]))  # noqa: E731
    print(
        f"machine: {platform.node()} {platform.processor() or platform.machine()}, "
        f"python {platform.python_version()}"
    )
    print(
        f"session: {a.cells} cells x {a.frames} frames, dF/F {dff_mb:.0f} MiB, "
        f"file {path.stat().st_size / 2**20:.0f} MiB, cell block {a.block}"
    )
    print("| step | median s | ratio to bare read | peak RSS increase MiB | x dF/F size |")
    print("|---|---|---|---|---|")
    b = med("seconds", 0)
    steps = (
        ("bare h5py read of the same datasets", 0),
        ("convert, responses only (store_trials: false)", 1),
        ("convert + trials", 2),
        ("convert + trials + sha256 of the input file", 3),
    )
    for name, j in steps:
        s, m = med("seconds", j), med("rss_increase_mb", j)
        print(f"| {name} | {s:.2f} | {s / b:.2f} | {m:.0f} | {m / dff_mb:.2f} |")


if __name__ == "__main__":
    main()
