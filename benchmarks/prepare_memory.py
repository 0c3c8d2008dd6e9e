"""Peak memory of compare_prepare and of the per-cell RF path, against the blocks they read.

prepare: a fabricated population store (cells x 118 images x 50 repeats, float32, chunked by
256 cells like results/neural/population.zarr, with its cell coordinates and reliability)
and the Allen-size stimuli (118 x 918 x 1174), inter-animal ceilings off unless asked
(their cost is time: ridge and PLS per held-out mouse); the rule's work (prepare_neural, then the
store written) runs in a fresh subprocess that reports its peak RSS (VmHWM) and time.
rf: RFScorer over a flat layer stored as ONE zarr chunk (stream.iter_unit_chunks then hands
it over whole), 100 selected neurons with their permutation maps. ``--src`` runs another
source tree (e.g. ``git worktree add /tmp/before main``: the "before" numbers).

    python benchmarks/prepare_memory.py --cells 16000 --block 2048 --out prepare.json
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

AREAS = ["VISp", "VISl", "VISal", "VISpm", "VISam", "VISrl"]
CRE = ["Cux2-CreERT2", "Emx1-IRES-Cre", "Rbp4-Cre_KL100", "Sst-IRES-Cre", "Vip-IRES-Cre"]

_HWM = """
import sys, time, json
sys.path.insert(0, {src!r})
def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM"):
            return int(line.split()[1]) / 1024
"""

PREPARE = (
    _HWM
    + """
from mice2machines import settings
from mice2machines.compare import prepare
from mice2machines.io import open_zarr, write_zarr_atomic
import xarray, zarr, dask.array
cfg = {cfg!r}
if "cell_block" not in settings.schema("compare")["properties"]:
    cfg.pop("cell_block", None)  # a source tree from before the key
base = hwm()
t = time.perf_counter()
ds = prepare.prepare_neural(open_zarr({pop!r}), open_zarr({stim!r}), cfg)
write_zarr_atomic(ds, {out!r})
print(json.dumps({{"seconds": time.perf_counter() - t, "peak_mb": hwm(), "base_mb": base,
                  "cells_kept": ds.sizes["cell"], "groups": ds.sizes["group"]}}))
"""
)

RF = (
    _HWM
    + """
import numpy as np
from mice2machines.compare import receptive_fields as rf, settings
from mice2machines.compare.inference import permutations
from mice2machines.compare.metrics.rf_rmse import RFScorer
from mice2machines.compare.registry import JobContext
from mice2machines.compare.stream import iter_unit_chunks
from mice2machines.io import open_zarr
g = np.random.default_rng(0)
n_img, n_sel = 118, {selected}
Y = g.normal(size=(n_img, n_sel))
F = rf.stimulus_matrix(g.uniform(0, 255, (n_img, 32, 40)))
cfg = {{**settings({{}}), "unit_chunk": {unit_chunk}}}
ctx = JobContext(Y=Y, folds=[], selected=np.ones(n_sel, bool), maps=rf.response_maps(Y.T, F),
                 stimulus_matrix=F, device="cpu", dtype=np.dtype("float32"), cfg=cfg,
                 perms={{"n_perm_max": permutations(n_img, {perms}, 0)}})
da = open_zarr({layer!r})["activations"]
base = hwm()
t = time.perf_counter()
scorer = RFScorer(ctx)
for _, block in iter_unit_chunks(da, {unit_chunk}):
    scorer.update(block)
res = scorer.result(None)
print(json.dumps({{"seconds": time.perf_counter() - t, "peak_mb": hwm(), "base_mb": base,
                  "best_unit_0": int(res["rf_unit"][0])}}))
"""
)


def run(code: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def fabricate_population(path: Path, cells: int, images: int = 118, repeats: int = 50) -> None:
    """A population store with the variables and coordinates of population.zarr: tuned cells
    (signal + noise), 2% NaN repeats, 135 cells per experiment, 3 experiments per mouse."""
    import xarray as xr

    from mice2machines.io import write_zarr_atomic

    g = np.random.default_rng(0)
    signal = g.normal(size=(cells, images, 1)).astype(np.float32)
    resp = signal + 2 * g.standard_normal((cells, images, repeats), dtype=np.float32)
    resp[g.random(resp.shape, dtype=np.float32) < 0.02] = np.nan
    exp = 500_000_000 + np.arange(cells) // 135
    cre = np.asarray(CRE)[(np.arange(cells) // 135) % len(CRE)]
    ds = xr.Dataset(
        {
            "responses": (("cell", "image", "repeat"), resp),
            "blank_responses": (("cell", "blank"), g.normal(size=(cells, 10)).astype("f4")),
            "reliability": (("cell",), g.uniform(0, 1, cells).astype(np.float32)),
        },
        coords={
            "cell": 600_000_000 + np.arange(cells),
            "image": np.arange(images),
            "experiment_id": ("cell", exp),
            "container_id": ("cell", exp // 3),
            "mouse": ("cell", np.array([f"mouse-{e // 3}" for e in exp])),
            "area": ("cell", np.asarray(AREAS)[(np.arange(cells) // 135) % len(AREAS)]),
            "cre_line": ("cell", cre),
            "ei_class": ("cell", np.where(np.isin(cre, CRE[3:]), "inhibitory", "excitatory")),
            "imaging_depth": ("cell", np.full(cells, 175)),
        },
    )
    write_zarr_atomic(ds.chunk({"cell": 256}), path)


def fabricate_stimuli(path: Path, height: int, width: int, images: int = 118) -> None:
    import xarray as xr

    from mice2machines.io import write_zarr_atomic

    g = np.random.default_rng(1)
    imgs = g.uniform(0, 255, (images, height, width)).astype(np.float32)
    ds = xr.Dataset({"images": (("image", "y", "x"), imgs)}, coords={"image": np.arange(images)})
    write_zarr_atomic(ds.chunk({"image": 8}), path)


def fabricate_layer(path: Path, units: int, images: int = 118) -> None:
    import xarray as xr

    g = np.random.default_rng(2)
    acts = g.standard_normal((images, units), dtype=np.float32)
    xr.Dataset({"activations": (("image", "unit"), acts)}).to_zarr(
        path, mode="w", consolidated=False, encoding={"activations": {"chunks": acts.shape}}
    )


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", type=int, default=16000)
    ap.add_argument("--block", type=int, default=2048, help="compare.cell_block")
    ap.add_argument("--repeats", type=int, default=50)
    ap.add_argument("--height", type=int, default=918)
    ap.add_argument("--width", type=int, default=1174)
    ap.add_argument("--n-splits", type=int, default=10)
    ap.add_argument("--rf-units", type=int, default=200_000, help="flat layer; 0: no RF run")
    ap.add_argument("--unit-chunk", type=int, default=65536)
    ap.add_argument("--selected", type=int, default=100)
    ap.add_argument("--perms", type=int, default=10, help="permutation maps per neuron (RF)")
    ap.add_argument(
        "--inter-animal",
        action="store_true",
        help="with the inter-animal ceilings (ridge and PLS per held-out mouse: minutes)",
    )
    ap.add_argument("--skip-prepare", action="store_true")
    ap.add_argument("--src", default=str(ROOT / "src"), help="source tree to measure")
    ap.add_argument("--out", help="write the results as JSON here")
    args = ap.parse_args(argv)

    result = {
        "machine": f"{platform.node()} ({platform.processor() or platform.machine()})",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "src": args.src,
        "args": vars(args),
    }
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if not args.skip_prepare:
            fabricate_population(tmp / "pop.zarr", args.cells, repeats=args.repeats)
            fabricate_stimuli(tmp / "stim.zarr", args.height, args.width)
            cfg = {
                "cell_block": args.block,
                "n_splits": args.n_splits,
                "inter_animal": args.inter_animal,
            }
            code = PREPARE.format(
                src=args.src, cfg=cfg, pop=str(tmp / "pop.zarr"), stim=str(tmp / "stim.zarr"),
                out=str(tmp / "neural.zarr"),
            )  # fmt: skip
            p = run(code)
            block_mb = min(args.block, args.cells) * 118 * args.repeats * 4 / 2**20
            full_mb = args.cells * 118 * args.repeats * 4 / 2**20
            p.update(
                block_mb=block_mb,
                responses_mb=full_mb,
                stimuli_mb=118 * args.height * args.width * 4 / 2**20,
                peak_over_block=p["peak_mb"] / block_mb,
                peak_over_responses=p["peak_mb"] / full_mb,
            )
            result["prepare"] = p
            print(json.dumps({"prepare": p}), flush=True)
        if args.rf_units:
            fabricate_layer(tmp / "layer.zarr", args.rf_units)
            code = RF.format(
                src=args.src, selected=args.selected, perms=args.perms,
                unit_chunk=args.unit_chunk, layer=str(tmp / "layer.zarr"),
            )  # fmt: skip
            r = run(code)
            maps = args.selected * (1 + args.perms)
            r.update(
                layer_mb=args.rf_units * 118 * 4 / 2**20,
                neuron_maps=maps,
                # per unit of a chunk: its float64 map (1280 pixels) and its distances
                chunk_mb=min(args.unit_chunk, args.rf_units) * (1280 + maps) * 8 / 2**20,
            )
            result["rf"] = r
            print(json.dumps({"rf": r}), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
