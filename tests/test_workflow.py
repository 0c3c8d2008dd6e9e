"""The workflow on the embedded default, config validation, lint and format."""

import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from conftest import ROOT, copy_config, snakemake_cmd

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
    copy_config(tmp_path)
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


def test_layer_drive_through_the_workflow(tmp_path):
    """synthetic.drive {kind: layer} wired through the synthetic_session rule: the planted table
    names each neuron's view and stored unit of the configured layer; the rule log says so."""
    import yaml

    copy_config(tmp_path)
    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    cfg["synthetic"].update(
        areas=["VISp"],
        cre_lines=["Cux2-CreERT2"],
        cells_per_experiment=40,
        drive={"kind": "layer", "model": "resnet18_random", "layer": "layer2.0.conv1"},
    )
    (tmp_path / "config" / "config.yaml").write_text(yaml.safe_dump(cfg))
    eid = int(synthetic.experiment_table(cfg["synthetic"]).experiment_id[0])
    target = f"results/synthetic/planted/{eid}_cells.tsv"
    proc = subprocess.run(
        snakemake_cmd(tmp_path, "--cores", "2", target, timeout_s=600),
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    cells = pd.read_csv(tmp_path / target, sep="\t")
    assert cells.drive_view.value_counts().to_dict() == {"channel": 20, "neurn": 12, "unit": 8}
    # layer2.0.conv1 of a ResNet-18 at 48 px: 128 channels x 6 x 6 stored units
    assert cells.drive_unit.between(0, 128 * 6 * 6 - 1).all() and cells.drive_unit.nunique() > 1
    log = (tmp_path / "logs" / "synthetic_session" / f"{eid}.log").read_text()
    assert "layer drive: resnet18_random / layer2.0.conv1" in log
