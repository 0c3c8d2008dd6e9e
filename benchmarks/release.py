"""Release shape: planning the full release, a no-op rerun, the aggregation's dask at release
size, what the compare jobs declare against what they hold, and every rule's peak memory.

    PYTHONPATH=src python benchmarks/release.py plan --out plan.json
    PYTHONPATH=src python benchmarks/release.py aggregate --cells 63000 --models 26 --out agg.json
    PYTHONPATH=src python benchmarks/release.py declared --out declared.json
    PYTHONPATH=$PWD/src python benchmarks/release.py peaks --out peaks.json

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
``peaks``: the real jobs of nwb_to_zarr, population, compare_prepare, compare_select,
compare_model, compare_aggregate and compare_figures through Snakemake, one at a time
(``--allowed-rules``: every other file is taken as it is), on release-shape inputs: one
synthetic session of ``--session-cells`` (made by the synthetic rules), 468 experiment stores
fabricated from it (``--cells`` in all; trials as metadata only), Allen-size stimuli, a zoo
whose first model is one flat layer of ``--flat-units`` units (extracted by the real rule)
and ``--models`` - 1 more result stores copied from its own (``--layers`` layers each). Each
job's peak is the last line of its log (mice2machines.io.script_logger: VmHWM, and its largest
child), beside the mem_mb its formula declares for the same inputs (attempt 1). The release
config (config/allen.yaml) except: the dask cluster local (its threads in the job), the
selection (``--per-class``) and ``--n-perm-max`` (the per-cell metrics' cost on a CPU), and
compare_prepare's inter-animal ceilings off unless ``--inter-animal`` (time, not memory).
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
import warnings
from pathlib import Path

import numpy as np
import yaml
from common import emit

from mice2machines import preflight, resources
from mice2machines.neural.population import READS

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


def workdir(wd: Path, cfg: dict) -> Path:
    """A run directory: the project's config folder, ``cfg`` as its config.yaml."""
    (wd / "config").mkdir(parents=True, exist_ok=True)
    for f in (ROOT / "config").iterdir():
        if f.is_file():
            shutil.copy(f, wd / "config" / f.name)
    (wd / "config" / "config.yaml").write_text(yaml.safe_dump(cfg))
    return wd


def plan(args) -> dict:
    wd = Path(args.keep or tempfile.mkdtemp(prefix="m2m-release-"))
    workdir(wd, release_config(args.per_combination, args.cells_per_experiment))
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


# --------------------------------------------------------------------------------- peaks

#: rules run by ``peaks``, in the DAG's order
PEAK_RULES = (
    "nwb_to_zarr",
    "population",
    "compare_prepare",
    "compare_select",
    "compare_model",
    "compare_aggregate",
    "compare_figures",
)
FLAT = "flat1m"
#: each rule's log under logs_dir (nwb_to_zarr's is per experiment)
LOGS = {
    "population": "population.log",
    "compare_prepare": "compare/prepare.log",
    "compare_select": "compare/select.log",
    "compare_model": f"compare/model/{FLAT}.log",
    "compare_aggregate": "compare/aggregate.log",
    "compare_figures": "compare/figures.log",
}
#: compare_figures' drawing processes (its threads): they do its work, so its job holds its own
#: peak and theirs (an upper bound: a forked process's ru_maxrss counts the pages it shares);
#: every other rule's children are forks of a moment (git), their ru_maxrss the job's then
FIGURE_WORKERS = 2
PEAK_LINE = re.compile(r"peak memory (\d+) MB \((\w+); largest child process (\d+) MB\)")
FLAT_SIZE = 224
FLAT_MODEL = '''"""A 3 x 3 convolution to {channels} channels of {size} x {size}, flattened: one flat layer
of {units} units (benchmarks/release.py peaks)."""

import torch.nn as nn


def build():
    return nn.Sequential(nn.Conv2d(3, {channels}, 3, padding=1), nn.Flatten())
'''


def peaks_config(args, per_combination: int, cells: int) -> dict:
    """The release's config on synthetic sessions (`release_config`), with the dask cluster
    local (its threads inside the job, so that their memory counts), the zoo's first model
    replaced by a flat layer, and the per-cell metrics' compute knobs (selection, n_perm_max)."""
    cfg = release_config(per_combination, cells)
    cfg["dask"] = {"cluster": "local", "n_workers": 1, "cores": os.cpu_count() or 1}
    cfg["models"]["table"] = "config/models_peaks.tsv"
    cfg["compare"]["selection"] = {"per_class": args.per_class}
    cfg["compare"]["n_perm_max"] = args.n_perm_max
    cfg["compare"]["inter_animal"] = args.inter_animal
    return cfg


def flat_zoo(wd: Path, units: int, n_models: int) -> tuple[int, list[str]]:
    """config/models_peaks.tsv: the first ``n_models`` rows of config/models_allen.tsv, the
    first replaced by the flat model (first, so the figures' examples read its store); returns
    its units and the table's names."""
    channels = max(1, round(units / FLAT_SIZE**2))
    n = channels * FLAT_SIZE**2
    model = wd / "config" / "flat_model.py"
    model.write_text(FLAT_MODEL.format(channels=channels, size=FLAT_SIZE, units=f"{n:,}"))
    lines = (ROOT / "config" / "models_allen.tsv").read_text().splitlines()
    header = next(r for r in lines if r.startswith("name\t"))
    rows = [r for r in lines if r and not r.startswith("#") and r != header][:n_models]
    rows[0] = f"{FLAT}\tmodule:{model}:build\trandom\t{FLAT_SIZE}\timagenet\tsquash\tnames:1\tnone"
    (wd / "config" / "models_peaks.tsv").write_text("\n".join([header, *rows]) + "\n")
    return n, [r.split("\t")[0] for r in rows]


def experiment_stores(wd: Path, cfg: dict, session: Path) -> list[Path]:
    """One store per experiment of the synthetic manifest, at nwb_to_zarr's paths: cells drawn
    from a converted session (their repeats shuffled, noise added), the manifest's ids and
    labels, and ``trials`` as metadata only (chunks unwritten: the release keeps them, the
    population reads none)."""
    import zarr

    from mice2machines.io import open_zarr, write_zarr_atomic

    table = manifest(cfg)
    src = open_zarr(session)
    trials = src["trials"]
    src = src[list(READS)].load()
    sd = float(np.nanstd(src["responses"].values))
    out, g = [], np.random.default_rng(0)
    for k, row in enumerate(table.itertuples()):
        path = wd / cfg["results_dir"] / "neural" / "experiments" / f"{row.experiment_id}.zarr"
        out.append(path)
        if path.exists():
            continue
        n = int(row.n_cells)
        part = src.isel(cell=g.choice(src.sizes["cell"], n, replace=n > src.sizes["cell"]))
        resp = part["responses"].values[:, :, g.permutation(part.sizes["repeat"])]
        resp = resp + g.normal(0, 0.5 * sd, resp.shape).astype(np.float32)
        ds = part.assign(responses=(part["responses"].dims, resp)).assign_coords(
            cell=700_000_000 + 10_000 * k + np.arange(n),
            **{
                c: ("cell", np.full(n, getattr(row, c)))
                for c in ("experiment_id", "container_id", "imaging_depth", "area")
                + ("cre_line", "ei_class", "mouse")
            },
        )
        ds.attrs = {**src.attrs, "experiment_id": int(row.experiment_id), "area": row.area}
        write_zarr_atomic(ds.chunk({"cell": 32}), path)
        root = zarr.open_group(str(path), mode="r+", zarr_format=3)
        root.create_array(
            "trials",
            shape=(n, *trials.shape[1:]),
            chunks=(32, *trials.encoding["chunks"][1:]),
            dtype="float32",
            fill_value=np.nan,
            dimension_names=list(trials.dims),
            attributes={"long_name": trials.attrs.get("long_name", "trials"), "units": "1"},
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # zarr: consolidated metadata in v3
            zarr.consolidate_metadata(str(path))
    return out


def stimuli_store(path: Path, height: int, width: int) -> None:
    """The stimulus store at Allen size (118 random images)."""
    from mice2machines.io import write_zarr_atomic
    from mice2machines.neural.population import stimuli_dataset

    imgs = np.random.default_rng(1).uniform(0, 255, (118, height, width)).astype(np.float32)
    write_zarr_atomic(stimuli_dataset(imgs, "release.py peaks", "{}"), path)


def other_model_stores(real: Path, names: list[str], layers: int) -> list[Path]:
    """The other models' result stores: the measured model's store with ``layers`` layers of
    random values (its groups, cells and variables), under each name."""
    from mice2machines.io import open_zarr, write_zarr_atomic

    ds = open_zarr(real).load()
    ds = ds.isel(layer=np.zeros(layers, dtype=np.int64)).assign_coords(
        layer=[f"layer{i}" for i in range(layers)],
        layer_index=("layer", np.arange(layers)),
        layer_depth=("layer", np.linspace(0, 1, layers)),
    )
    out, g = [], np.random.default_rng(2)
    for name in names:
        path = real.with_name(f"{name}.zarr")
        out.append(path)
        if path.exists():
            continue
        fake = ds.copy()
        for v, da in ds.data_vars.items():
            if "layer" in da.dims and da.dtype.kind == "f":
                fake[v] = (da.dims, g.random(da.shape).astype(da.dtype))
        fake.attrs["model"] = name
        write_zarr_atomic(fake, path)
    return out


def rule_run(wd: Path, rule: str, target: str, *allowed: str) -> dict:
    """One job of ``rule`` through Snakemake (forced; only ``allowed`` rules may run, every
    other file is taken as it is): wall and CPU seconds, the mem_mb Snakemake declared."""
    args = ["--cores", str(os.cpu_count() or 1), "--forcerun", rule, "--allowed-rules"]
    (wall, cpu), out = _snakemake(wd, *args, rule, *allowed, "--", target, timeout=3600)
    declared = [int(m) for m in re.findall(r"\bmem_mb=(\d+)", out)]
    return {"wall_s": wall, "cpu_s": cpu, "snakemake_mem_mb": declared[-1] if declared else None}


def peak_of(log: Path) -> dict:
    """The job's peak memory from the last line of its log (mice2machines.io.script_logger)."""
    m = PEAK_LINE.search(log.read_text().strip().splitlines()[-1])
    if not m:
        raise RuntimeError(f"{log}: no peak memory line at the end")
    return {"peak_mb": int(m[1]), "peak_source": m[2], "child_mb": int(m[3])}


def manifest(cfg: dict):
    """The synthetic experiments of a config (its defaults filled in)."""
    from mice2machines.settings import validate_config
    from mice2machines.synthetic import experiment_table

    return experiment_table(validate_config(json.loads(json.dumps(cfg)))["synthetic"])


def peaks(args) -> dict:
    """Fabricate the release's inputs, run each rule's real job, compare peaks and mem_mb."""
    t_all = time.perf_counter()
    wd = Path(args.keep or tempfile.mkdtemp(prefix="m2m-peaks-")).resolve()
    per_comb = 39
    per_exp = -(-args.cells // (len(AREAS) * len(CRE) * per_comb))
    cfg = peaks_config(args, per_comb, per_exp)
    workdir(wd, cfg)
    units, models = flat_zoo(wd, args.flat_units, args.models)
    res, logs = Path(cfg["results_dir"]), Path(cfg["logs_dir"])
    cmp_dir, mb = res / "compare", resources.input_mb
    out = {"workdir": str(wd), "cells": per_exp * len(AREAS) * len(CRE) * per_comb}
    out.update(per_experiment=per_exp, flat_units=units, models=len(models))
    keys = ("selection", "n_perm_max", "inter_animal", "unit_chunk")
    out["compare"] = {k: cfg["compare"][k] for k in keys}
    rows: dict[str, dict] = {}
    todo = set(args.rules)

    def run(rule, target, inputs, about, base=wd, log=None, allowed=(), workers=0):
        if rule not in todo:
            return
        rec = {**rule_run(base, rule, target, *allowed), "inputs": about()}
        rec.update(peak_of(base / logs / (log or LOGS[rule])))
        rec["declared_mem_mb"] = resources.mem_mb(rule, inputs)
        rec["job_mb"] = rec["peak_mb"] + workers * rec["child_mb"]
        rec["ratio"] = round(rec["job_mb"] / rec["declared_mem_mb"], 3)
        rows[rule] = rec
        print(f"{rule}: {json.dumps(rec)}", file=sys.stderr, flush=True)

    # nwb_to_zarr: one session, larger than any real one, from the synthetic rules
    sess_cfg = peaks_config(args, 1, args.session_cells)
    sess_cfg["synthetic"].update(areas=["VISp"], cre_lines=["Cux2-CreERT2"])
    sess_cfg["models"]["table"] = str(wd / "config" / "models_peaks.tsv")
    sess = workdir(wd / "session", sess_cfg)
    eid = int(manifest(sess_cfg).experiment_id[0])
    store = sess / res / "neural" / "experiments" / f"{eid}.zarr"
    nwb = sess / res / "synthetic" / "ophys_experiment_data" / f"{eid}.nwb"
    if not store.exists():
        todo.add("nwb_to_zarr")
    sessions = ("synthetic_stimuli", "synthetic_manifest", "synthetic_session")
    run("nwb_to_zarr", str(store.relative_to(sess)), {"nwb": str(nwb)},
        lambda: f"{args.session_cells:,} cells, NWB {nwb.stat().st_size / 1e6:,.0f} MB",
        base=sess, log=Path("nwb_to_zarr") / f"{eid}.log", allowed=sessions)  # fmt: skip

    t0 = time.perf_counter()
    stores = [str(p) for p in experiment_stores(wd, cfg, store)]
    stim = wd / res / "stimuli.zarr"
    if not stim.exists():
        stimuli_store(stim, args.height, args.width)
    out["fabricate_experiments_s"] = round(time.perf_counter() - t0, 1)
    pop = str(wd / res / "neural" / "population.zarr")
    run("population", "population", {"stores": stores},
        lambda: f"{len(stores)} experiment stores: {mb(stores, names=READS):,.0f} MB read, "
        f"{mb(stores):,.0f} MB with their trials")  # fmt: skip
    neural = str(wd / cmp_dir / "neural.zarr")
    run("compare_prepare", "compare_prepare", {"population": pop, "stimuli": str(stim)},
        lambda: f"population {mb(pop):,.0f} MB, stimuli {mb(str(stim)):,.0f} MB")  # fmt: skip
    selected = str(wd / cmp_dir / "selected_neurons.tsv")
    run("compare_select", "compare_select", {"neural": neural},
        lambda: f"neural {mb(neural):,.0f} MB")  # fmt: skip

    acts_dir = wd / res / "activations"
    acts = acts_dir / f"{FLAT}.zarr"
    if not acts.exists():
        t0 = time.perf_counter()
        cores = str(os.cpu_count() or 1)
        _snakemake(wd, "--cores", cores, "--allowed-rules", "fetch_weights",
                   "extract_activations", "--", str(acts.relative_to(wd)), timeout=3600)  # fmt: skip
        out["extract_s"] = round(time.perf_counter() - t0, 1)
    for m in models[1:]:  # the figures' inputs; they read the first model's store only
        (acts_dir / f"{m}.zarr").mkdir(parents=True, exist_ok=True)
    real = wd / cmp_dir / "models" / f"{FLAT}.zarr"
    run("compare_model", str(real.relative_to(wd)),
        {"neural": neural, "selected": selected, "activations": str(acts)},
        lambda: f"neural {mb(neural):,.0f} MB, a flat layer of {units:,} units "
        f"({mb(str(acts), largest=True):,.0f} MB)")  # fmt: skip

    t0 = time.perf_counter()
    model_stores = [str(p) for p in [real, *other_model_stores(real, models[1:], args.layers)]]
    out["fabricate_models_s"] = round(time.perf_counter() - t0, 1)
    scores = str(wd / cmp_dir / "scores.zarr")
    run("compare_aggregate", "compare_aggregate", {"stores": model_stores},
        lambda: f"{len(model_stores)} model stores, {mb(model_stores):,.0f} MB")  # fmt: skip
    run("compare_figures", "compare_figures", {"store": scores, "neural": neural},
        lambda: f"scores {mb(scores):,.0f} MB, neural {mb(neural):,.0f} MB",
        workers=FIGURE_WORKERS)  # fmt: skip
    out["rules"] = rows
    out["wall_s"] = round(time.perf_counter() - t_all, 1)
    if not args.keep:
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
    k = sub.add_parser("peaks", help="each rule's peak memory at release shape vs mem_mb")
    k.add_argument("--cells", type=int, default=63_000, help="population (468 experiments)")
    k.add_argument("--session-cells", type=int, default=1300, help="the nwb_to_zarr session")
    k.add_argument("--flat-units", type=int, default=1_000_000)
    k.add_argument("--models", type=int, default=26, help="result stores aggregated")
    k.add_argument("--layers", type=int, default=20, help="layers of the other result stores")
    k.add_argument("--per-class", type=int, default=50, help="compare.selection.per_class")
    k.add_argument("--n-perm-max", type=int, default=10, help="compare.n_perm_max")
    k.add_argument(
        "--inter-animal", action="store_true", help="with compare_prepare's inter-animal ceilings"
    )
    k.add_argument("--height", type=int, default=918, help="stimulus height")
    k.add_argument("--width", type=int, default=1174, help="stimulus width")
    k.add_argument("--rules", nargs="+", choices=PEAK_RULES, default=list(PEAK_RULES))
    k.add_argument("--keep", help="work in this directory (kept; inputs reused)")
    for s in (p, a, d, k):
        s.add_argument("--out", help="also write the JSON here")
    args = ap.parse_args()
    run = {"plan": plan, "aggregate": aggregate_run, "declared": declared, "peaks": peaks}
    result = run[args.what](args)
    emit({"what": args.what, **result}, args.out)


if __name__ == "__main__":
    main()
