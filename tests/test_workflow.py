"""The workflow on the embedded default, config validation, lint and format."""

import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from conftest import ROOT, snakemake_cmd

from mice2machines import synthetic

pytestmark = pytest.mark.workflow


def test_demo_population_store(demo_run):
    res = demo_run / "results"
    cfg = __import__("yaml").safe_load((ROOT / "config" / "config.yaml").read_text())
    syn = cfg["synthetic"]
    manifest = pd.read_csv(res / "manifest.tsv", sep="\t")
    assert len(manifest) == len(syn["areas"]) * len(syn["cre_lines"])
    pop = xr.open_zarr(res / "neural" / "population.zarr", consolidated=False)
    assert pop.responses.dims == ("cell", "image", "repeat")
    assert pop.sizes["image"] == 118 and pop.sizes["repeat"] == syn["n_repeats"]
    assert pop.sizes["cell"] == len(manifest) * syn["cells_per_experiment"]
    assert set(pop.area.values) == set(syn["areas"])
    assert set(pop.cre_line.values) == set(syn["cre_lines"])
    assert set(pop.ei_class.values) == {"excitatory", "inhibitory"}
    assert "provenance" in pop.attrs
    stim = xr.open_zarr(res / "stimuli.zarr", consolidated=False)
    assert stim.images.shape == (118, syn["image_height"], syn["image_width"])

    # responses follow the planted receptive fields
    images = stim.images.values
    mean = pop.responses.mean("repeat").load()
    corr = []
    for eid in manifest.experiment_id:
        cells = pd.read_csv(res / "synthetic" / "planted" / f"{eid}_cells.tsv", sep="\t")
        rates = synthetic.firing_rates(cells, images)
        got = mean.sel(cell=cells.cell_specimen_id.values).values
        corr += [np.corrcoef(g, r)[0, 1] for g, r in zip(got, rates, strict=True)]
    assert np.median(corr) > 0.6


def test_demo_logs_every_rule(demo_run):
    logs = list((demo_run / "logs").rglob("*.log"))
    assert any("nwb_to_zarr" in str(p) for p in logs)
    text = next((demo_run / "logs" / "nwb_to_zarr").glob("*.log")).read_text()
    assert "written" in text and "done" in text


def test_invalid_config_is_rejected(tmp_path):
    (tmp_path / "config").mkdir()
    bad = (ROOT / "config" / "config.yaml").read_text().replace("n_repeats: 50", "n_repeats: one")
    (tmp_path / "config" / "config.yaml").write_text(bad)
    proc = subprocess.run(
        snakemake_cmd(tmp_path, "-n", timeout_s=120), capture_output=True, text=True
    )
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "n_repeats" in out and "is not of type 'integer'" in out


def test_allen_config_dry_run_plans_discovery(tmp_path):
    """config/allen.yaml parses, validates and starts from the discovery checkpoint."""
    (tmp_path / "config").mkdir()
    for f in (ROOT / "config").iterdir():
        if f.is_file():
            shutil.copy(f, tmp_path / "config" / f.name)
    proc = subprocess.run(
        snakemake_cmd(
            tmp_path, "-n", "--configfile", str(tmp_path / "config" / "allen.yaml"), timeout_s=120
        ),
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "allen_manifest" in proc.stdout + proc.stderr


def test_snakemake_lint():
    exe = shutil.which("snakemake") or str(ROOT / ".venv" / "bin" / "snakemake")
    proc = subprocess.run(
        ["timeout", "120", exe, "--lint"], cwd=ROOT, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def test_snakefmt_check():
    exe = shutil.which("snakefmt") or str(ROOT / ".venv" / "bin" / "snakefmt")
    proc = subprocess.run(
        [exe, "--check", "Snakefile", "workflow"], cwd=ROOT, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_ruff_clean():
    exe = shutil.which("ruff") or str(ROOT / ".venv" / "bin" / "ruff")
    dirs = ["src", "tests", "workflow", "benchmarks"]
    for args in (["check", *dirs], ["format", "--check", *dirs]):
        proc = subprocess.run([exe, *args], cwd=ROOT, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
