"""Training jobs: a tiny real run learns, a killed job resumes exactly, clear data errors."""

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from mice2machines.dg import domains, networks, training

SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """Small real domains: 60 MNIST digits per class (source) and two rendered targets."""
    d = tmp_path_factory.mktemp("dgdata")
    paths = {
        "mnist": domains.write_domain(
            domains.build_domain("mnist", n_per_class=60), d / "mnist.zarr"
        ),
        "syndigits": domains.write_domain(
            domains.build_domain("syndigits", n_per_class=10), d / "syndigits.zarr"
        ),
    }
    return {k: str(v) for k, v in paths.items()}


def test_tiny_cpu_run_beats_chance(stores, tmp_path):
    cfg = training.TrainConfig(
        arch="small_cnn",
        variant="neurn",
        seed=0,
        epochs=1,
        batch_size=16,
        max_samples=500,
        threads=2,
    )
    m = training.run_job(cfg, stores["mnist"], stores, tmp_path)
    assert m["n_train"] == 400 and m["n_val"] == 100
    assert m["val_acc"] > 0.4  # chance is 0.1
    assert m["targets"]["mnist"]["split"] == "source-val"
    assert m["targets"]["mnist"]["acc"] == m["val_acc"]
    assert m["targets"]["syndigits"]["n"] == 100
    assert m["run"]["device"] == "cpu"  # the CPU fallback, no GPU here
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    assert on_disk["targets"] == m["targets"]
    assert not (tmp_path / "state.pt").exists()  # removed after success
    # the kept checkpoint is the selected network, loadable by the model zoo
    model = networks.load_checkpoint(tmp_path / "best.pt")
    ds = domains.load_domain(stores["mnist"])
    x, y = domains.domain_arrays(ds, "source")
    _, val = training.split_source(len(y), 0, 0.2, 500)
    res = training.evaluate(model, torch.from_numpy(x[val]), torch.from_numpy(y[val]))
    assert res["acc"] == m["val_acc"]


KILLABLE = textwrap.dedent("""
    import json, logging, os, signal, sys
    from mice2machines.dg import training
    logging.basicConfig(level=logging.INFO)
    cfg, source, targets, out, kill_at = json.loads(sys.argv[1])
    def on_batch(epoch, batch):
        if [epoch, batch] == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, as a node failure
    training.run_job(training.TrainConfig(**cfg), source, targets, out, on_batch=on_batch)
""")


def _job(args, env) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", KILLABLE, json.dumps(args)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_killed_job_resumes_to_identical_metrics(stores, tmp_path):
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    cfg = {
        "arch": "small_cnn",
        "variant": "neurn",
        "seed": 3,
        "epochs": 3,
        "batch_size": 32,
        "max_samples": 300,
        "threads": 1,
    }
    targets = {"mnist": stores["mnist"], "syndigits": stores["syndigits"]}
    killed, clean = tmp_path / "killed", tmp_path / "clean"

    # killed in the middle of epoch 2, after the checkpoint of epoch 1
    proc = _job([cfg, stores["mnist"], targets, str(killed), [2, 3]], env)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert not (killed / "metrics.json").exists()
    state = torch.load(killed / "state.pt", weights_only=True)
    assert state["epoch"] == 1

    proc = _job([cfg, stores["mnist"], targets, str(killed), None], env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "resumed from" in proc.stderr
    proc = _job([cfg, stores["mnist"], targets, str(clean), None], env)
    assert proc.returncode == 0, proc.stderr[-2000:]

    a = json.loads((killed / "metrics.json").read_text())
    b = json.loads((clean / "metrics.json").read_text())
    assert a["run"]["resumed_after_epoch"] == 1 and b["run"]["resumed_after_epoch"] == 0
    assert training.comparable(a) == training.comparable(b)
    sa = networks.read_checkpoint(killed / "best.pt")["state_dict"]
    sb = networks.read_checkpoint(clean / "best.pt")["state_dict"]
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_state_of_other_settings_is_not_resumed(tmp_path):
    import logging

    cfg = training.TrainConfig(epochs=2)
    path = tmp_path / "state.pt"
    torch.save({"key": {"config": training.TrainConfig(epochs=3).result_key()}}, path)
    log = logging.getLogger("test")
    assert training._load_state(path, {"config": cfg.result_key()}, log) is None
    path.write_bytes(b"truncated")
    assert training._load_state(path, {"config": cfg.result_key()}, log) is None


def test_missing_or_corrupt_data_names_the_file(stores, tmp_path):
    cfg = training.TrainConfig(epochs=1, max_samples=100)
    with pytest.raises(FileNotFoundError, match="absent.zarr"):
        training.run_job(cfg, tmp_path / "absent.zarr", {}, tmp_path / "a")
    import shutil

    broken = tmp_path / "broken.zarr"
    shutil.copytree(stores["syndigits"], broken)
    (broken / "zarr.json").write_text("{")  # the consolidated metadata every reader reads
    with pytest.raises(domains.DomainFileError, match="broken.zarr"):
        training.run_job(cfg, stores["mnist"], {"broken": broken}, tmp_path / "b")


def test_split_and_subsets_are_seeded_and_disjoint():
    tr, va = training.split_source(1000, 5, 0.2, 500)
    assert len(tr) == 400 and len(va) == 100 and not set(tr) & set(va)
    tr2, va2 = training.split_source(1000, 5, 0.2, 500)
    assert np.array_equal(tr, tr2) and np.array_equal(va, va2)
    assert not np.array_equal(training.split_source(1000, 6, 0.2, 500)[1], va)
    assert np.array_equal(training.eval_subset(50, 20), training.eval_subset(50, 20))
    assert len(training.eval_subset(50, None)) == 50


def test_determinism_is_torchs_warn_only_mode_without_its_compiler():
    """set_determinism is use_deterministic_algorithms(..., warn_only=True), and a fresh
    process that sets it does not load torch's compiler (2 s of every training job)."""
    code = textwrap.dedent(
        """
        import sys, torch
        from mice2machines.dg.training import set_determinism
        set_determinism(True)
        on = (torch.are_deterministic_algorithms_enabled(),
              torch.is_deterministic_algorithms_warn_only_enabled())
        set_determinism(False)
        print(on, torch.are_deterministic_algorithms_enabled(),
              "torch._inductor" in sys.modules, "torch._dynamo" in sys.modules)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["(True,", "True)", "False", "False", "False"]


def test_device_selection_and_config_checks():
    assert training.select_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="no GPU"):
            training.select_device("cuda")
    with pytest.raises(ValueError, match="variant"):
        training.TrainConfig(variant="both")
    cfg = training.TrainConfig.from_dict({"arch": "vit", "seed": 2, "unrelated": 1})
    assert cfg.arch == "vit" and cfg.seed == 2
    assert "device" not in cfg.result_key() and "threads" not in cfg.result_key()


def test_train_config_takes_the_schema_defaults():
    """TrainConfig has one field per dg.train key, defaulting to the schema's value."""
    import dataclasses

    from mice2machines import settings

    train = settings.defaults("dg")["train"]
    cfg = training.TrainConfig()
    assert cfg.train_settings() == train and train["prepare_once"] is True
    job = {"arch", "variant", "source", "seed", "neurn"}
    assert {f.name for f in dataclasses.fields(cfg)} == set(train) | job
    assert cfg.neurn == settings.defaults("neurn")
    assert (
        settings.section("dg", {"train": {"prepare_once": False}})["train"]["prepare_once"] is False
    )


def test_job_params_carry_only_result_settings_canonically():
    from mice2machines import settings
    from mice2machines.dg import jobs

    dg = settings.section("dg", {"arch_train": {"vit": {"lr": 0.5, "threads": 3}}})
    job = jobs.job_settings(dg, "vit", "neurn", "mnist", "2")
    assert job["lr"] == 0.5 and job["seed"] == 2 and jobs.run_settings(job)["threads"] == 3
    params = jobs.result_params(dg, "vit", "neurn", "mnist", "2")
    assert json.loads(params) == training.TrainConfig.from_dict(job).result_key()
    assert not set(jobs.RUN_KEYS) & set(json.loads(params))
    assert params == json.dumps(json.loads(params), sort_keys=True)
