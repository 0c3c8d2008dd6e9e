"""The workflow on the embedded default, config validation, lint and format."""

import copy
import json
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import ROOT, copy_config, dry_run_probe, snakemake_cmd

from mice2machines import synthetic
from mice2machines import workflow_params as wp
from mice2machines.io import open_zarr
from mice2machines.models.zoo import ModelSpec
from mice2machines.settings import schema, validate_config

pytestmark = pytest.mark.workflow


def test_demo_population_store(demo_run):
    res = demo_run / "results"
    syn = _demo_config()["synthetic"]
    manifest = pd.read_csv(res / "manifest.tsv", sep="\t")
    assert len(manifest) == len(syn["areas"]) * len(syn["cre_lines"])
    pop = open_zarr(res / "neural" / "population.zarr")
    assert pop.responses.dims == ("cell", "image", "repeat")
    assert pop.sizes["image"] == 118 and pop.sizes["repeat"] == syn["n_repeats"]
    assert pop.sizes["cell"] == len(manifest) * syn["cells_per_experiment"]
    assert set(pop.area.values) == set(syn["areas"])
    assert set(pop.cre_line.values) == set(syn["cre_lines"])
    assert set(pop.ei_class.values) == {"excitatory", "inhibitory"}
    assert "provenance" in pop.attrs
    stim = open_zarr(res / "stimuli.zarr")
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
    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    cfg.setdefault("synthetic", {})["n_repeats"] = "one"
    (tmp_path / "config" / "config.yaml").write_text(yaml.safe_dump(cfg))
    proc = subprocess.run(
        snakemake_cmd(tmp_path, "-n", timeout_s=120), capture_output=True, text=True
    )
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "n_repeats" in out and "is not of type 'integer'" in out


@pytest.mark.parametrize(
    "edit, message",
    [
        ({"comapre": {"n_boot": 3}}, "config (top level): Additional properties are not allowed"),
        ({"compare": {"n_bot": 3}}, "config compare: Additional properties are not allowed"),
        ({"compare": {"metrics": ["rsa"]}}, "config compare.metrics.0: 'rsa' is not one of"),
        ({"resources": {"compare_modle": {"mem_mb": 10}}}, "no rule named compare_modle"),
        ({"results_dir": ""}, "config results_dir: '' would put outputs at the filesystem root"),
        ({"results_dir": "/"}, "config results_dir: '/' would put outputs at the filesystem"),
        ({"logs_dir": "//"}, "config logs_dir: '//' would put outputs at the filesystem root"),
        (
            {"neural": {"trial_window_frames": [45, -30]}},
            "config neural.trial_window_frames: [45, -30] is not [first, last)",
        ),
        ({"neural": {"trial_window_frames": [5]}}, "config neural.trial_window_frames: [5] is"),
    ],
)
def test_config_mistakes_refused_before_any_job(tmp_path, edit, message):
    """A typo in a key, a value or a rule name stops the plan with one line naming it."""
    (tmp_path / "config").mkdir()
    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    for key, value in edit.items():
        cfg[key] = {**(cfg.get(key) or {}), **value} if isinstance(value, dict) else value
    (tmp_path / "config" / "config.yaml").write_text(yaml.safe_dump(cfg))
    proc = subprocess.run(
        snakemake_cmd(tmp_path, "-n", timeout_s=120), capture_output=True, text=True
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and message in out, out[-2000:]
    assert "$schema" not in out  # the message, not a schema dump


def test_documented_train_key_prepare_once_is_accepted(tmp_path):
    """dg.train.prepare_once (config/README.md) plans like any other documented key."""
    copy_config(tmp_path)
    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    cfg["dg"]["train"]["prepare_once"] = False
    (tmp_path / "config" / "config.yaml").write_text(yaml.safe_dump(cfg))
    proc = subprocess.run(
        snakemake_cmd(tmp_path, "-n", timeout_s=120), capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


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
    copy_config(tmp_path)
    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    cfg.setdefault("synthetic", {}).update(
        areas=["VISp"],
        cre_lines=["Cux2-CreERT2"],
        cells_per_experiment=40,
        drive={
            "kind": "layer",
            "model": "mobilenet_v3_small_random",
            "layer": "features.3.block.0.0",
        },
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
    # features.3.block.0.0 of a MobileNetV3-Small at 48 px: 88 channels x 6 x 6 stored units
    assert cells.drive_unit.between(0, 88 * 6 * 6 - 1).all() and cells.drive_unit.nunique() > 1
    log = (tmp_path / "logs" / "synthetic_session" / f"{eid}.log").read_text()
    assert "layer drive: mobilenet_v3_small_random / features.3.block.0.0" in log


# ---------------------------------------------------------------- rule params (rerun triggers)

#: settings of where and how fast jobs run: changing them must rerun nothing
RUN_CHANGES = {
    "models": {"writers": 1, "threads": 7, "device": "cpu", "gpu": 0, "max_store_gb": 3},
    "neural": {"cell_block": 5},
    "compare": {"device": "cpu", "unit_chunk": 1000, "cell_block": 5, "gpu": 1},
    "dask": {"cluster": "synchronous", "n_workers": 3, "cores": 5},
    "dg": {"train": {"threads": 3, "device": "cpu", "eval_batch_size": 64}},
}


def _demo_config() -> dict:
    return validate_config(yaml.safe_load((ROOT / "config" / "config.yaml").read_text()))


def _reversed(node):
    """The same settings with the keys of every mapping in reverse order."""
    if isinstance(node, dict):
        return {k: _reversed(node[k]) for k in reversed(list(node))}
    return node


def _changed(config: dict, changes: dict) -> dict:
    out = copy.deepcopy(config)
    for section, values in changes.items():
        for key, value in values.items():
            if isinstance(value, dict):
                out[section][key].update(value)
            else:
                out[section][key] = value
    return out


def _params_of(rule: str, config: dict) -> str:
    job = {
        "synthetic_session": {"drive_model": None},
        "fetch_weights": {"spec": {"name": "m"}},
        "extract_activations": {"spec": {"name": "m"}},
        "architecture_similarity": {"specs": [{"name": "m"}]},
        "compare_aggregate": {"models": ["m"]},
    }.get(rule, {})
    return wp.job_params(rule, config, **job)


def test_job_params_ignore_key_order_and_run_settings():
    """Each rule's params: the same string for reordered keys or other run settings; a result
    setting changes exactly the rules whose jobs read it."""
    a = _demo_config()
    b = _changed(_reversed(a), RUN_CHANGES)
    assert list(b["compare"]) == list(reversed(list(a["compare"])))
    for rule in wp.JOB_KEYS:
        assert _params_of(rule, a) == _params_of(rule, b), rule
        assert json.loads(_params_of(rule, a))  # valid JSON, not empty
    for section, keys in wp.RUN_KEYS.items():
        props = schema(section)["properties"]
        assert set(keys) <= set(props), section
    for rule, (section, keys) in wp.JOB_KEYS.items():
        assert set(keys) <= set(schema(section)["properties"]), rule
        assert not set(keys) & set(wp.RUN_KEYS.get(section, ())), rule

    def rerun(changes: dict) -> set[str]:
        c = _changed(a, changes)
        return {r for r in wp.JOB_KEYS if _params_of(r, a) != _params_of(r, c)}

    for key, value in [("n_boot", 7), ("n_perm", 9), ("n_perm_max", 3), ("ci_level", 0.9)]:
        assert rerun({"compare": {key: value}}) == {"compare_model"}, key
    assert rerun({"compare": {"metrics": ["rsa_spearman"]}}) == {"compare_model", "compare_figures"}
    assert rerun({"compare": {"selection": {"n_clusters": 3}}}) == {"compare_select"}
    assert rerun({"compare": {"seed": 1}}) == {"compare_prepare", "compare_select", "compare_model"}
    assert rerun({"compare": {"map_size": [8, 10]}}) == {"compare_prepare"}
    assert rerun({"compare": {"dtype": "float64"}}) == {"compare_model"}
    assert rerun({"models": {"batch_size": 3}}) == {"extract_activations"}
    assert rerun({"models": {"weights_dir": "elsewhere"}}) == {"fetch_weights"}
    assert rerun({"neural": {"min_reliability": 0.2}}) == {"population"}
    assert rerun({"neural": {"response_frames": 7}}) == {"nwb_to_zarr"}
    assert rerun({"synthetic": {"n_repeats": 9}}) == {"synthetic_session"}
    assert rerun({"synthetic": {"drive": {"mix": {"unit": 1.0}}}}) == set()  # planted RFs
    layer = _changed(a, {"synthetic": {"drive": {"kind": "layer", "model": "m", "layer": "x"}}})
    rows = {n: ModelSpec(n, "torchvision:resnet18", "random", 32) for n in ("m", "other")}
    assert wp.layer_drive_model(a, rows) is None
    assert wp.layer_drive_model(layer, rows) == {"spec": rows["m"].to_dict(), "seed": 0}
    changed = {**rows, "other": ModelSpec("other", "torchvision:resnet50", "random", 64)}
    assert wp.layer_drive_model(layer, changed) == wp.layer_drive_model(layer, rows)
    with pytest.raises(ValueError, match="not in the models table"):
        wp.layer_drive_model(layer, {})
    with pytest.raises(ValueError, match="replace settings"):
        wp.job_params("compare_figures", a, metrics=["rsa_spearman"])


#: {job: its params as Snakemake records them for the params rerun trigger}
_PARAMS = """
result = {
    f"{job.rule.name}:{sorted(job.wildcards_dict.items())}": w.persistence._params(job)
    for job in w.dag.jobs
}
"""


def _dag_params(workdir, config: dict) -> dict:
    copy_config(workdir)
    (workdir / "config" / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return dry_run_probe(workdir, _PARAMS)


def test_every_setting_is_a_job_run_or_dag_key():
    """A new schema key must be sorted: passed to the jobs that read it (a rerun when it
    changes), a run setting (no rerun) or a key that shapes the DAG; never silently none."""
    from mice2machines import settings

    for section in sorted({sec for sec, _ in wp.JOB_KEYS.values()}):
        keys = set(settings.schema(section)["properties"])
        job = {k for sec, ks in wp.JOB_KEYS.values() if sec == section for k in ks}
        run, dag = set(wp.RUN_KEYS.get(section, ())), set(wp.DAG_KEYS.get(section, ()))
        assert not (job & run) and not (job & dag) and not (run & dag), section
        assert keys == job | run | dag, (
            f"{section}: unsorted {sorted(keys - job - run - dag)}, "
            f"unknown {sorted((job | run | dag) - keys)}"
        )


def test_rule_params_of_the_demo_dag(tmp_path):
    """Planned from scratch, every job of the demo has the same params (what Snakemake's params
    trigger compares) with every key in reverse order and other run settings; other bootstrap,
    null and metric settings change compare_model's params and leave compare_prepare's."""
    a = _demo_config()
    runs = {
        "a": a,
        "b": _changed(_reversed(a), RUN_CHANGES),
        "c": _changed(
            a, {"compare": {"n_boot": 7, "n_perm": 9, "metrics": ["rsa_spearman", "ridge"]}}
        ),
    }
    got = {}
    for name, cfg in runs.items():
        (tmp_path / name).mkdir()
        got[name] = _dag_params(tmp_path / name, cfg)
    assert got["a"] == got["b"]
    rules = {job.split(":")[0] for job in got["a"]}
    assert set(wp.JOB_KEYS) <= rules | {"stimuli"}
    for job, params in got["a"].items():
        rule = job.split(":")[0]
        if rule in ("compare_model", "compare_figures"):
            assert got["c"][job] != params, job
        elif rule not in ("all", "compare_aggregate"):
            assert got["c"][job] == params, job


@pytest.mark.slow
def test_null_config_through_the_workflow(tmp_path):
    """config/null.yaml, laid over a smaller demo (4 sessions, one model): neurons without
    image-locked signal give scores at chance and no FDR discovery, PLS and ridge on
    randomly projected layers included."""
    copy_config(tmp_path)
    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    cfg.setdefault("synthetic", {})["areas"] = ["VISp", "VISl"]
    cfg.setdefault("models", {})["only"] = ["mobilenet_v3_small_random"]
    metrics = ["rsa_spearman", "cka_unbiased", "ridge", "pls", "match"]
    cfg["compare"].update(n_boot=0, metrics=metrics, pls_components=5)
    # the demo zoo's block outputs are at most 2,304 units: some projected, some not
    cfg["compare"]["random_projection"] = {"enabled": True, "n_components": 1000}
    (tmp_path / "config" / "config.yaml").write_text(yaml.safe_dump(cfg))
    target = "results/null/compare/scores.csv"
    proc = subprocess.run(
        snakemake_cmd(
            tmp_path,
            target,
            "--cores",
            "2",
            "--configfile",  # takes every word after it: last
            str(tmp_path / "config" / "null.yaml"),
            timeout_s=1500,
        ),
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    log = next((tmp_path / "logs" / "null" / "synthetic_session").glob("*.log")).read_text()
    assert "(drive: none)" in log
    log = next((tmp_path / "logs" / "null" / "compare" / "model").glob("*.log")).read_text()
    assert "random projection of" in log and "no wider than the projection" in log
    df = pd.read_csv(tmp_path / target)
    assert set(df.metric) == set(metrics)
    assert df.p.notna().all() and not df.significant.any(), df[df.significant]
    for metric, rows in df.groupby("metric"):
        assert abs(rows.score.mean()) < 0.05, (metric, rows.score.mean())
        assert abs(rows.z.mean()) < 1.0, (metric, rows.z.mean())
    assert 0.3 < df.p.mean() < 0.7, df.p.mean()
    # one mouse per experiment: every group holds 2 or more; the other mice predict none
    mapping = df.metric.isin(["ridge", "pls"])
    for _, rows in df[mapping].groupby("metric"):
        ia = rows.groupby("group").ceiling_inter_animal.agg(["min", "max"])
        assert (ia["min"] == ia["max"]).all() and ia["min"].notna().all(), ia
        assert (ia["min"].abs() < 0.1).all(), ia
    assert df[~mapping].ceiling_inter_animal.isna().all()
