"""A user's nn.Module and a timm model scored by the workflow, by `mice2machines.score` and
by ``m2m score``: identical numbers. ``m2m validate`` and ``snakemake -n`` refuse bad rows;
``m2m inspect`` counts what a source holds; a failed weights fetch is one line in its log."""

import http.server
import importlib.util
import subprocess
import sys
import threading

import numpy as np
import pytest
import torch
import yaml
from conftest import copy_config, snakemake_cmd

import mice2machines as m2m
from mice2machines.io import as_str, open_zarr

pytestmark = pytest.mark.workflow

NETS = """
from torch import nn


def make_net():
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, stride=2), nn.ReLU(), nn.Conv2d(4, 6, 3), nn.Flatten()
    )
"""
HEADER = "name\tbuilder\tweights\tinput_size\tlayers\n"
ZOO = HEADER + (
    "mynet\tmodule:nets.py:make_net\trandom\t32\tdefault\n"
    "r10\ttimm:resnet10t\trandom\t32\tnames:layer1,layer2\n"
)
CONFIG = {
    "source": "synthetic",
    "synthetic": {
        "seed": 3, "image_height": 24, "image_width": 30, "n_repeats": 4, "areas": ["VISp"],
        "cre_lines": ["Cux2-CreERT2", "Sst-IRES-Cre"], "cells_per_experiment": 12,
    },
    "models": {
        "table": "config/zoo.tsv", "batch_size": 64, "max_store_gb": 1, "max_memory_gb": 1,
        "writers": 2, "threads": 1, "gpu": 0, "device": "cpu",
    },
    "compare": {
        "metrics": ["rsa_pearson", "cka_unbiased", "ridge"], "n_splits": 2, "n_boot": 10,
        "n_perm": 5, "n_perm_max": 5,
        "selection": {"embedding": "pca", "per_class": 6, "n_clusters": 2},
    },
}  # fmt: skip
MODELS = ("mynet", "r10")


def setup_workdir(work, zoo=ZOO):
    copy_config(work)
    (work / "config" / "config.yaml").write_text(yaml.safe_dump(CONFIG))
    (work / "config" / "zoo.tsv").write_text(zoo)
    (work / "nets.py").write_text(NETS)
    return work


def cli(work, *args, timeout=300):
    return subprocess.run(
        [sys.executable, "-W", "ignore", "-m", "mice2machines.cli", *args],
        cwd=work, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    """The tiny workflow run to one compare store per model (no DG, no aggregation)."""
    work = setup_workdir(tmp_path_factory.mktemp("scored"))
    targets = [f"results/compare/models/{m}.zarr" for m in MODELS]
    proc = subprocess.run(
        snakemake_cmd(work, "--cores", "2", *targets, timeout_s=600), capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return work


def assert_same_store(a, b):
    assert sorted(a.data_vars) == sorted(b.data_vars) and dict(a.sizes) == dict(b.sizes)
    for name in list(a.data_vars) + list(a.coords):
        x, y = np.asarray(a[name].values), np.asarray(b[name].values)
        if x.dtype.kind == "f":
            # equal to rounding: BLAS sums in an order that depends on its thread count (the
            # workflow's jobs run with their rule's threads, this process with the machine's)
            np.testing.assert_allclose(x, y, rtol=1e-13, atol=1e-15, err_msg=name)
        elif x.dtype.kind in "cib":
            np.testing.assert_array_equal(x, y, err_msg=name)
        else:
            assert as_str(x).tolist() == as_str(y).tolist(), name


def test_workflow_and_api_give_identical_scores(scored, monkeypatch):
    """Each zoo row by name, the user's factory as an nn.Module built here, and the timm row
    as a builder string: the numbers the workflow wrote."""
    monkeypatch.chdir(scored)
    pop = "results/neural/population.zarr"
    for name in MODELS:
        wf = m2m.open_scores(f"results/compare/models/{name}.zarr").load()
        ds = m2m.score(name, pop, config="config/config.yaml")
        assert_same_store(ds, wf)
        assert np.isfinite(ds["score"].sel(metric="rsa_pearson").values).all()
    spec = importlib.util.spec_from_file_location("user_nets", scored / "nets.py")
    nets = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(nets)
    torch.manual_seed(0)  # models.seed: the workflow's build seed
    images = m2m.open_stimuli("results/stimuli.zarr")["images"].values  # as an array
    ds = m2m.score(
        nets.make_net(), m2m.open_population(pop), images, config="config/config.yaml",
        row={"name": "mynet", "input_size": 32},
    )  # fmt: skip
    assert_same_store(ds, m2m.open_scores("results/compare/models/mynet.zarr").load())
    ds = m2m.score(
        "timm:resnet10t,name=r10,input_size=32", pop, layers=["layer1", "layer2"],
        config="config/config.yaml", workdir="api",
    )  # fmt: skip
    assert_same_store(ds, m2m.open_scores("results/compare/models/r10.zarr").load())
    assert list(m2m.open_activations("api/activations/r10.zarr")["layer"]) == ["layer1", "layer2"]
    # settings as keywords: fewer metrics, another seed
    ds = m2m.score("mynet", pop, metrics=["rsa_pearson"], config="config/config.yaml", n_perm=3)
    assert ds["metric"].values.tolist() == ["rsa_pearson"] and ds.attrs["n_perm"] == 3


def test_cli_score_writes_the_api_store(scored):
    out = scored / "cli_r10.zarr"
    proc = cli(scored, "score", "r10", "results/neural/population.zarr", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_same_store(
        open_zarr(out).load(), open_zarr(scored / "results/compare/models/r10.zarr").load()
    )
    proc = cli(scored, "inspect", str(out))
    assert (
        "kind: result_store" in proc.stdout
        and "metrics: rsa_pearson, cka_unbiased, ridge" in proc.stdout
    )


def test_cli_inspect_counts_a_neural_source(scored, nwb_paths, small_cfg):
    proc = cli(scored, "inspect", str(nwb_paths[0]))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert "kind: allen_nwb1" in lines and "images: 118" in lines
    assert f"cells: {small_cfg['cells_per_experiment']}" in lines
    assert f"repeats: {small_cfg['n_repeats']}" in lines
    proc = cli(scored, "inspect", "results/neural/population.zarr")
    assert "cells: 24" in proc.stdout and "repeats: 4" in proc.stdout
    assert "mice: 2" in proc.stdout.splitlines()  # one per synthetic experiment
    assert "cre_lines: Cux2-CreERT2, Sst-IRES-Cre" in proc.stdout and "areas: VISp" in proc.stdout


def test_cli_validate_finds_each_bad_input(scored):
    ok = cli(
        scored,
        "validate",
        "--model",
        "timm:resnet10t",
        "--neural",
        "results/neural/population.zarr",
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "ok: models table config/zoo.tsv (2 models)" in ok.stdout
    (scored / "bad_builder.tsv").write_text(
        HEADER + "x\ttorchvison:resnet18\trandom\t32\tdefault\n"
    )
    (scored / "bad_arch.tsv").write_text(HEADER + "y\ttimm:resnet10tt\trandom\t32\tdefault\n")
    (scored / "bad.yaml").write_text(yaml.safe_dump({**CONFIG, "compare": {"n_bot": 3}}))
    proc = cli(
        scored, "validate", "--config", "bad.yaml", "--models", "bad_builder.tsv", "--models",
        "bad_arch.tsv", "--model", "module:nets.py:make_nett", "--model",
        "module:nots.py:make_net", "--neural", "nope.nwb",
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    errors = [line for line in proc.stdout.splitlines() if line.startswith("error: ")]
    expected = [
        "config compare: Additional properties are not allowed ('n_bot'",
        "data row 1 (x): builder 'torchvison:resnet18'",
        "model 'y' (timm:resnet10tt): timm has no model",
        "nets.py has no 'make_nett'",
        "file nots.py does not exist",
        "nope.nwb does not exist",
    ]
    assert len(errors) == len(expected), proc.stdout
    for line, message in zip(errors, expected, strict=True):
        assert message in line, (line, message)


def test_misspelt_builder_fails_the_dry_run_naming_the_row(tmp_path):
    work = setup_workdir(tmp_path, ZOO.replace("timm:resnet10t", "timm:resnet10tt"))
    proc = subprocess.run(snakemake_cmd(work, "-n", timeout_s=300), capture_output=True, text=True)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "config/zoo.tsv: model 'r10' (timm:resnet10tt): timm has no model 'resnet10tt'" in out


class _NotFound(http.server.BaseHTTPRequestHandler):
    """A Hugging Face endpoint on loopback that has no file (404 at once)."""

    def do_HEAD(self):
        self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_HEAD

    def log_message(self, *args):
        pass


def test_failed_weights_fetch_is_one_line_naming_model_and_url(tmp_path, monkeypatch):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NotFound)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    work = setup_workdir(tmp_path, HEADER + "r10p\ttimm:resnet10t\tpretrained\t32\tdefault\n")
    try:
        proc = subprocess.run(
            snakemake_cmd(work, "--cores", "1", "results/weights/r10p.json", timeout_s=300),
            capture_output=True, text=True,
        )  # fmt: skip
    finally:
        server.shutdown()
    assert proc.returncode != 0
    log = (work / "logs" / "fetch_weights" / "r10p.log").read_text()
    lines = log.strip().splitlines()
    assert "Traceback" not in log and len(lines) == 2 and "peak memory" in lines[1], log
    assert "model 'r10p'" in log and f"{endpoint}/timm/resnet10t.c3_in1k" in log
