"""Declared memory from input sizes and the attempt: the formulas, and what the planned
workflow's jobs declare for them."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import yaml
from conftest import ROOT, copy_config, dry_run_probe

from mice2machines import resources
from mice2machines.io import write_zarr_atomic


def _store(path: Path, shape: tuple[int, ...]) -> Path:
    """A real zarr v3 store whose one float32 array has ``shape`` (written lazily: the
    chunks stay unwritten fill values, the metadata tells the size)."""
    import dask.array as da

    data = da.zeros(shape, dtype="float32", chunks=shape)
    ds = xr.Dataset({"responses": (("cell", "trial"), data)})
    ds.to_zarr(path, mode="w", zarr_format=3, consolidated=True, compute=False)
    return path


def test_store_sizes_come_from_the_metadata(tmp_path):
    small = _store(tmp_path / "a.zarr", (1000, 500))
    write_zarr_atomic(xr.Dataset({"x": ("i", np.arange(250_000, dtype="int64"))}), tmp_path / "b")
    assert resources.input_mb(small) == pytest.approx(2.0)
    assert resources.input_mb([small, tmp_path / "b"]) == pytest.approx(4.0)
    assert resources.input_mb([small, tmp_path / "b"], largest=True) == pytest.approx(2.0)
    assert resources.input_mb(tmp_path / "missing.zarr") == 0.0


def test_memory_grows_with_the_input_and_the_attempt(tmp_path):
    small = {"population": str(_store(tmp_path / "s.zarr", (1000, 1000)))}
    big = {"population": str(_store(tmp_path / "b.zarr", (63_000, 5_900)))}
    f = resources.MEMORY["compare_prepare"]
    one = resources.mem_mb("compare_prepare", small, 1)
    assert one == int(np.ceil(f.base + f.factors["population"] * 4.0))
    assert resources.mem_mb("compare_prepare", small, 2) == 2 * one
    # 63k cells x 5,900 trials of float32: 1.49 GB of responses
    big_mb = resources.mem_mb("compare_prepare", big, 1)
    assert big_mb == int(np.ceil(f.base + f.factors["population"] * 1486.8))
    assert big_mb > one
    assert resources.mem_mb("compare_prepare", big, 2, override=12000) == 24000


def test_population_memory_counts_the_arrays_it_reads(tmp_path):
    """An experiment store's trials (unwritten chunks, 5,950 presentations x 75 frames) do
    not count: the population reads responses and blank responses only."""
    import zarr

    from mice2machines.neural.population import READS

    path = tmp_path / "e.zarr"
    root = zarr.open_group(str(path), mode="w", zarr_format=3)
    for name, shape in [("responses", (1000, 118, 50)), ("blank_responses", (1000, 50)),
                        ("trials", (1000, 5950, 75))]:  # fmt: skip
        root.create_array(name, shape=shape, dtype="float32")
    zarr.consolidate_metadata(str(path))
    f = resources.MEMORY["population"]
    assert f.arrays["stores"] == READS
    assert resources.input_mb(path) == pytest.approx(4 * 1000 * (118 * 50 + 50 + 5950 * 75) / 1e6)
    reads_mb = 4 * 1000 * (118 * 50 + 50) / 1e6
    assert resources.input_mb(path, names=READS) == pytest.approx(reads_mb)
    want = int(np.ceil(f.base + f.factors["stores"] * 3 * reads_mb))
    assert resources.mem_mb("population", {"stores": [str(path)] * 3}) == want
    assert "`stores` (`responses`, `blank_responses`)" in resources.table()


def test_the_table_names_every_rule():
    text = resources.table()
    assert all(f"`{rule}`" in text for rule in resources.MEMORY)


#: each planned compare_prepare and population job's mem_mb on attempts 1 and 2
_MEM = """
result = {}
for job in w.dag.jobs:
    if job.rule.name in ("compare_prepare", "population"):
        result[job.rule.name] = [
            job.rule.expand_resources(job.wildcards_dict, job.input, a)["mem_mb"]
            for a in (1, 2)
        ]
"""


def _planned_mem(workdir: Path, overrides: dict | None = None) -> dict:
    cfg = yaml.safe_load((workdir / "config" / "config.yaml").read_text())
    cfg["resources"] = overrides or {}
    (workdir / "config" / "config.yaml").write_text(yaml.safe_dump(cfg))
    return dry_run_probe(workdir, _MEM, targets={"compare_prepare", "population"})


@pytest.mark.slow
def test_planned_jobs_declare_memory_from_their_inputs(tmp_path):
    """compare_prepare's mem_mb follows the population store it reads (a store of 63k cells
    planned against one of 1k), doubles on the retry, and a config override wins."""
    copy_config(tmp_path)
    pop = tmp_path / "results" / "neural" / "population.zarr"
    _store(pop, (1_000, 5_900))
    small = _planned_mem(tmp_path)["compare_prepare"]
    _store(pop, (63_000, 5_900))
    big = _planned_mem(tmp_path)
    # 1,000 / 63,000 cells x 5,900 trials of float32: 23.6 / 1,486.8 MB
    f = resources.MEMORY["compare_prepare"]
    first = [int(np.ceil(f.base + f.factors["population"] * mb)) for mb in (23.6, 1486.8)]
    assert small == [first[0], 2 * first[0]]
    assert big["compare_prepare"] == [first[1], 2 * first[1]]
    assert big["population"][1] == 2 * big["population"][0]
    over = _planned_mem(tmp_path, {"compare_prepare": {"mem_mb": 30000}})
    assert over["compare_prepare"] == [30000, 60000]


def test_config_readme_shows_the_formulas():
    text = (ROOT / "config" / "README.md").read_text()
    block = text.split("<!-- memory -->\n")[1].split("<!-- /memory -->")[0]
    assert block.strip() == resources.table(), "rerun `python -m mice2machines.resources`"


def test_a_release_size_heatmap_is_capped_both_ways(tmp_path):
    """26 models x 6 areas x 60 layers (a 7416 x 8544 px heatmap before the caps): the PNG's
    longer side stays at most figures.MAX_PIXELS."""
    import itertools

    import pandas as pd
    from PIL import Image

    from mice2machines.compare import figures

    rows = [
        {"metric": "rsa_spearman", "group_by": "area", "model": f"m{m}", "group_value": a,
         "layer_index": li, "layer": f"l{li}", "score": (m + li) / 100, "q": 0.01,
         "significant": True}
        for m, a, li in itertools.product(range(26), ["VISp", "VISl", "VISal", "VISpm",
                                                      "VISam", "VISrl"], range(60))
    ]  # fmt: skip
    fig = figures.heatmap(pd.DataFrame(rows), "rsa_spearman")
    assert max(fig.get_size_inches()) <= figures.MAX_INCHES
    png, _ = figures.save(fig, tmp_path / "h.png")
    w, h = Image.open(png).size
    assert max(w, h) <= figures.MAX_PIXELS and min(w, h) > 500, (w, h)


@pytest.mark.slow
def test_small_run_logs_its_preflights_and_memory(tmp_path):
    """Two sessions and one small model through compare_aggregate: the preflights run (and
    pass) in population's and compare_model's jobs, each job declared the memory of its
    formula, and figures draw from the lazily read stores in forked processes."""
    from conftest import snakemake_cmd

    copy_config(tmp_path)
    cfg = yaml.safe_load((tmp_path / "config" / "config.yaml").read_text())
    cfg["synthetic"] = {"areas": ["VISp", "VISl"], "cre_lines": ["Cux2-CreERT2"]}
    cfg["models"]["only"] = ["mobilenet_v3_small_random"]
    cfg["compare"].update(n_boot=0, n_perm=5, n_perm_max=5, metrics=["rsa_spearman", "ridge"])
    (tmp_path / "config" / "config.yaml").write_text(yaml.safe_dump(cfg))
    proc = subprocess.run(
        snakemake_cmd(tmp_path, "--cores", "2", "results/compare/scores.csv", timeout_s=900),
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    logs = tmp_path / "logs"
    log = (logs / "compare" / "model" / "mobilenet_v3_small_random.log").read_text()
    assert "preflight: {'peak_mb'" in log
    assert "preflight: {'need_bytes'" in (logs / "population.log").read_text()
    # the job's declared memory, as Snakemake planned it for the first attempt
    neural = tmp_path / "results" / "compare" / "neural.zarr"
    acts = tmp_path / "results" / "activations" / "mobilenet_v3_small_random.zarr"
    want = resources.mem_mb("compare_model", {"neural": neural, "activations": acts})
    assert f"mem_mb={want}" in proc.stdout + proc.stderr
    # figures from the lazily opened stores, drawn in two forked processes
    from mice2machines.report import Inputs, draw, paths_from_results, registered
    from mice2machines.settings import validate_config
    from mice2machines.workflow_params import job_params

    fig_cfg = json.loads(job_params("compare_figures", validate_config(cfg)))
    specs = [s for s in registered(fig_cfg["metrics"]) if s.stage == "compare"][:3]
    inputs = Inputs(paths_from_results(tmp_path / "results"), fig_cfg)
    done = draw(specs, inputs, tmp_path / "f", "compare", workers=2)
    assert len(done) == 3 and all(p.stat().st_size > 1000 for p in done)
