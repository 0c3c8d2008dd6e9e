"""Release shape: planning the full release, a no-op rerun, the aggregation's dask at release
size, and what the compare jobs declare against what they hold.

    PYTHONPATH=src python benchmarks/release.py plan --out plan.json
    PYTHONPATH=src python benchmarks/release.py aggregate --cells 63000 --models 26 --out agg.json
    PYTHONPATH=src python benchmarks/release.py declared --out declared.json

``plan``: config/allen.yaml's zoo (26 models), compare and paper-size DG sweep on 468 synthetic
experiments (6 areas x 2 Cre lines x 39); times a dry run of every job, then makes every output
(empty, in the DAG's order), records them with ``--touch`` and times the no-op dry run
(target: under 15 s each; wall and CPU seconds, the CPU ones free of other tenants' load).
``aggregate``: fabricated per-model result stores (the dims and variables compare_model writes:
metric x group x layer scores, layer x cell per-cell variables), then compare_aggregate's work
(concatenation and zarr write under the configured dask cluster, the tidy and bottom-up tables)
in a subprocess per dask setting, recording its wall time, peak RSS (VmHWM), whether a worker
paused, against the mem_mb the rule declares for those stores.
``declared``: metadata-only neural and activation stores at release shape (a 10^6-unit flat
layer among them): each compare rule's declared mem_mb (mice2machines.resources) beside
compare_model's preflight estimate.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml
from common import emit

from mice2machines import preflight, resources

ROOT = Path(__file__).resolve().parents[1]
AREAS = ["VISp", "VISl", "VISal", "VISpm", "VISam", "VISrl"]
CRE = ["Cux2-CreERT2", "Vip-IRES-Cre"]


# ---------------------------------------------------------------------------------- plan


def release_config(per_combination: int, cells: int) -> dict:
    """config/allen.yaml's models, compare and DG sections on synthetic sessions."""
    cfg = yaml.safe_load((ROOT / "config" / "allen.yaml").read_text())
    cfg.pop("allen", None)
    cfg.update(source="synthetic", results_dir="results/release", logs_dir="logs/release")
    cfg["synthetic"] = {
        "experiments_per_combination": per_combination,
        "cells_per_experiment": cells,
    }
    return cfg


def _snakemake(workdir: Path, *args: str, timeout: int = 600) -> tuple[float, str]:
    exe = Path(sys.executable).with_name("snakemake")
    cmd = [str(exe), "-s", str(ROOT / "Snakefile"), "--directory", str(workdir), *args]
    t0, c0 = time.perf_counter(), _children_cpu()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    wall, cpu = time.perf_counter() - t0, _children_cpu() - c0
    if proc.returncode:
        raise RuntimeError(" ".join(cmd) + "\n" + proc.stdout[-3000:] + proc.stderr[-3000:])
    return (round(wall, 2), round(cpu, 2)), proc.stdout + proc.stderr


def _children_cpu() -> float:
    """CPU seconds (user + system) of the finished child processes: on a shared machine the
    wall time also counts the other tenants' load."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def _jobs(out: str) -> int:
    m = re.search(r"^total\s+(\d+)", out, re.M)
    return int(m.group(1)) if m else 0


_OUTPUTS = """
import json, sys
from pathlib import Path
from snakemake.api import SnakemakeApi
from snakemake.settings.types import (
    ConfigSettings, DAGSettings, OutputSettings, Quietness, ResourceSettings, StorageSettings
)
snakefile, workdir, out = sys.argv[1:4]
with SnakemakeApi(OutputSettings(quiet={Quietness.ALL})) as api:
    wf = api.workflow(
        resource_settings=ResourceSettings(cores=1), config_settings=ConfigSettings(),
        storage_settings=StorageSettings(), snakefile=Path(snakefile), workdir=Path(workdir),
    )
    wf.dag(DAGSettings()).execute_workflow(executor="dryrun")
    dag = wf._workflow.dag
    order, seen = [], set()
    def visit(job):
        if job in seen:
            return
        seen.add(job)
        for dep in dag.dependencies[job]:
            visit(dep)
        order.extend([str(f), f.is_directory] for f in job.output)
    for job in list(dag.jobs):
        visit(job)
Path(out).write_text(json.dumps(order))
"""


def fake_outputs(workdir: Path) -> int:
    """Every planned output made (empty files and folders), mtimes in the DAG's order, so the
    next dry run has nothing to do; returns how many."""
    listing = workdir / "outputs.json"
    subprocess.run(
        [sys.executable, "-c", _OUTPUTS, str(ROOT / "Snakefile"), str(workdir), str(listing)],
        check=True, timeout=1800,
    )  # fmt: skip
    order = json.loads(listing.read_text())
    t = time.time() - len(order) - 10
    for i, (name, is_dir) in enumerate(order):
        p = workdir / name
        if is_dir:
            p.mkdir(parents=True, exist_ok=True)
        else:
            p.parent.mkdir(parents=True, exist_ok=True)
            p.touch()
        os.utime(p, (t + i, t + i))
    return len(order)


def plan(args) -> dict:
    wd = Path(args.keep or tempfile.mkdtemp(prefix="m2m-release-"))
    (wd / "config").mkdir(parents=True, exist_ok=True)
    for f in (ROOT / "config").iterdir():
        if f.is_file():
            shutil.copy(f, wd / "config" / f.name)
    cfg = release_config(args.per_combination, args.cells_per_experiment)
    (wd / "config" / "config.yaml").write_text(yaml.safe_dump(cfg))
    t_plan, out = _snakemake(wd, "-n")
    n = _jobs(out)
    t0 = time.perf_counter()
    n_outputs = fake_outputs(wd)
    _snakemake(wd, "--touch", "--cores", "1", timeout=1800)  # records params and code
    t_touch = time.perf_counter() - t0
    t_noop, out_noop = _snakemake(wd, "-n")
    result = {
        "experiments": len(AREAS) * len(CRE) * args.per_combination,
        "jobs_planned": n,
        "plan_wall_cpu_s": t_plan,
        "outputs_made": n_outputs,
        "outputs_s": round(t_touch, 2),
        "noop_wall_cpu_s": t_noop,
        "noop_nothing_to_do": "Nothing to be done" in out_noop,
        "noop_jobs": _jobs(out_noop),
        "workdir": str(wd),
    }
    if not args.keep:
        shutil.rmtree(wd, ignore_errors=True)
    return result


# ----------------------------------------------------------------------------- aggregate

PER_CELL = ("ridge_r", "ridge_p", "ridge_q", "match_r", "match_p", "match_q")
PER_CELL += ("rf_rmse", "rf_rmse_p", "rf_rmse_q")
METRICS = ("rsa_spearman", "cka_unbiased", "ridge", "match", "rf_rmse")


def model_store(path: Path, name: str, cells: int, layers: int, seed: int) -> None:
    """A per-model result store with compare_model's dims and variables (random values)."""
    import xarray as xr

    from mice2machines.compare.aggregate import SCORE_VARS
    from mice2machines.io import write_zarr_atomic

    rng = np.random.default_rng(seed)
    groups = [f"area={a}" for a in AREAS] + [f"cre_line={c}" for c in CRE] + ["all=all"]
    shape = (len(METRICS), len(groups), layers)
    data = {v: (("metric", "group", "layer"), rng.random(shape)) for v in SCORE_VARS}
    data["ceiling"] = (("metric", "group"), rng.random(shape[:2]))
    data["n_cells"] = (("metric", "group"), np.full(shape[:2], cells // 10, dtype=np.int64))
    for v in PER_CELL:
        data[v] = (("layer", "cell"), rng.random((layers, cells)))
    data["rf_unit"] = (("layer", "cell"), rng.integers(0, 1000, (layers, cells)))
    cell_area = np.asarray(AREAS)[np.arange(cells) % len(AREAS)]
    ds = xr.Dataset(
        data,
        coords={
            "metric": list(METRICS),
            "group": groups,
            "group_by": ("group", [g.split("=")[0] for g in groups]),
            "group_value": ("group", [g.split("=")[1] for g in groups]),
            "layer": [f"layer{i}" for i in range(layers)],
            "layer_index": ("layer", np.arange(layers)),
            "layer_depth": ("layer", np.linspace(0, 1, layers)),
            "n_units": ("layer", np.full(layers, 4096, dtype=np.int64)),
            "layer_kind": ("layer", np.full(layers, "conv")),
            "cell": np.arange(cells, dtype=np.int64),
            "area": ("cell", cell_area),
            "cre_line": ("cell", np.asarray(CRE)[np.arange(cells) % 2]),
            "ei_class": ("cell", np.asarray(["E", "I"])[np.arange(cells) % 2]),
            "selected": ("cell", np.arange(cells) % 63 == 0),
        },
        attrs={"model": name, "fdr_alpha": 0.05},
    )
    write_zarr_atomic(ds, path)


_AGGREGATE = """
import json, sys, time
from pathlib import Path
from mice2machines.cluster import dask_client
from mice2machines.compare import aggregate
from mice2machines.io import write_zarr_atomic
stores, out, dask_cfg = json.loads(sys.argv[1]), Path(sys.argv[2]), json.loads(sys.argv[3])
t0 = time.perf_counter()
with dask_client(dask_cfg):
    ds = aggregate.aggregate(stores)
    write_zarr_atomic(ds, out / "scores.zarr")
t_write = time.perf_counter() - t0
ds = aggregate.open_store(out / "scores.zarr")
rows = len(aggregate.tidy(ds)), len(aggregate.bottom_up(ds))
hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM"))
print(json.dumps({"write_s": round(t_write, 1), "total_s": round(time.perf_counter() - t0, 1),
                  "peak_rss_mb": round(hwm / 1024), "rows": rows}))
"""


def aggregate_run(args) -> dict:
    wd = Path(args.keep or tempfile.mkdtemp(prefix="m2m-aggregate-"))
    stores = []
    t0 = time.perf_counter()
    for m in range(args.models):
        p = wd / "models" / f"model{m:02d}.zarr"
        if not p.exists():
            model_store(p, f"model{m:02d}", args.cells, args.layers, m)
        stores.append(str(p))
    out = {
        "cells": args.cells,
        "models": args.models,
        "layers": args.layers,
        "fabricate_s": round(time.perf_counter() - t0, 1),
        "stores_mb": round(resources.input_mb(stores), 1),
        "declared_mem_mb": resources.mem_mb("compare_aggregate", {"stores": stores}),
    }
    for cluster in args.clusters:
        dest = wd / cluster
        shutil.rmtree(dest, ignore_errors=True)
        dest.mkdir()
        dask_cfg = {"cluster": cluster}  # the dask section's defaults otherwise
        t = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-c", _AGGREGATE, json.dumps(stores), str(dest), json.dumps(dask_cfg)],
            capture_output=True, text=True, timeout=args.timeout,
        )  # fmt: skip
        rec = {"wall_s": round(time.perf_counter() - t, 1), "rc": proc.returncode}
        rec["paused"] = "memory usage" in proc.stderr and "paus" in proc.stderr.lower()
        if proc.returncode == 0:
            rec.update(json.loads(proc.stdout.strip().splitlines()[-1]))
            rec["under_declared"] = rec["peak_rss_mb"] < out["declared_mem_mb"]
        else:
            rec["stderr"] = proc.stderr[-2000:]
        out[cluster] = rec
    if not args.keep:
        shutil.rmtree(wd, ignore_errors=True)
    return out


# ------------------------------------------------------------------------------ declared


def _metadata_store(path: Path, arrays: dict) -> Path:
    """A zarr v3 store with the arrays' metadata only (chunks unwritten: fill values)."""
    import zarr

    root = zarr.open_group(str(path), mode="w", zarr_format=3)
    for name, (shape, dims) in arrays.items():
        group, _, leaf = name.rpartition("/")
        g = root.require_group(group) if group else root
        g.create_array(leaf, shape=shape, dtype="float32", dimension_names=dims)
    zarr.consolidate_metadata(str(path))
    return path


def declared(args) -> dict:
    wd = Path(tempfile.mkdtemp(prefix="m2m-declared-"))
    cells, images, trials = args.cells, 118, 118 * 50
    pop = _metadata_store(
        wd / "population.zarr", {"responses": ((cells, trials), ["cell", "trial"])}
    )
    neural = _metadata_store(
        wd / "neural.zarr",
        {
            "responses": ((cells, images), ["cell", "image"]),
            "split_halves": ((10, 2, cells, images), ["split", "half", "cell", "image"]),
        },
    )
    widths = {"conv1": (images, 64, 112, 112), "fc_flat": (images, args.flat_units)}
    acts = _metadata_store(
        wd / "acts.zarr",
        {
            f"{k}/activations": (s, ["image", "unit"] if len(s) == 2 else ["image", "c", "y", "x"])
            for k, s in widths.items()
        },
    )
    cfg = {"unit_chunk": args.unit_chunk, "n_folds": 5}
    inputs = {"neural": str(neural), "activations": str(acts)}
    out = {
        "cells": cells,
        "flat_units": args.flat_units,
        "unit_chunk": args.unit_chunk,
        "compare_prepare": resources.mem_mb("compare_prepare", {"population": str(pop)}),
        "compare_select": resources.mem_mb("compare_select", {"neural": str(neural)}),
        "compare_model": resources.mem_mb("compare_model", inputs),
        "compare_model_preflight": preflight.compare_model_peak_mb(neural, acts, cfg, 1000),
    }
    shutil.rmtree(wd, ignore_errors=True)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="what", required=True)
    p = sub.add_parser("plan", help="time the release's dry run and a no-op")
    p.add_argument("--per-combination", type=int, default=39, help="experiments per area x Cre")
    p.add_argument("--cells-per-experiment", type=int, default=135)
    p.add_argument("--keep", help="work in this directory (kept)")
    a = sub.add_parser("aggregate", help="compare_aggregate's work at release size")
    a.add_argument("--cells", type=int, default=63_000)
    a.add_argument("--models", type=int, default=26)
    a.add_argument("--layers", type=int, default=20)
    a.add_argument("--clusters", nargs="+", default=["local", "synchronous"])
    a.add_argument("--timeout", type=int, default=1800, help="seconds per aggregation")
    a.add_argument("--keep", help="work in this directory (kept; stores reused)")
    d = sub.add_parser("declared", help="declared memory and compare_model's preflight")
    d.add_argument("--cells", type=int, default=63_000)
    d.add_argument("--flat-units", type=int, default=1_000_000)
    d.add_argument("--unit-chunk", type=int, default=65536)
    for s in (p, a, d):
        s.add_argument("--out", help="also write the JSON here")
    args = ap.parse_args()
    result = {"plan": plan, "aggregate": aggregate_run, "declared": declared}[args.what](args)
    emit({"what": args.what, **result}, args.out)


if __name__ == "__main__":
    main()
