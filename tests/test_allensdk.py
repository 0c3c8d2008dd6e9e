"""allensdk's own reader (its pinned venv) against ours, and offline discovery."""

import json
import shutil
import subprocess

import numpy as np
import pytest
from conftest import ROOT, allensdk_python, real_fixtures, require_or_skip

from mice2machines.neural.allen import read_manifest
from mice2machines.neural.nwb import read_session

pytestmark = pytest.mark.allensdk


@pytest.fixture(scope="module")
def sdk_python():
    py = allensdk_python()
    require_or_skip(
        py is not None, "M2M_REQUIRE_ALLENSDK", "allensdk venv (.venv-allensdk) missing"
    )
    return py


def test_allensdk_reads_synthetic_files_like_we_do(sdk_python, nwb_paths, tmp_path):
    for path in nwb_paths:
        out = tmp_path / f"{path.stem}.npz"
        proc = subprocess.run(
            [str(sdk_python), str(ROOT / "tests" / "allensdk_dump.py"), str(path), str(out)],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        meta = json.loads(proc.stdout.strip().splitlines()[-1])
        sdk = np.load(out)
        ours = read_session(path)
        np.testing.assert_array_equal(sdk["cell_ids"], ours.cell_specimen_ids)
        np.testing.assert_array_equal(sdk["timestamps"], ours.timestamps)
        np.testing.assert_array_equal(sdk["dff"], next(ours.dff_blocks(10_000))[1])
        np.testing.assert_array_equal(sdk["frame"], ours.stimulus.frame)
        np.testing.assert_array_equal(sdk["start"], ours.stimulus.start)
        np.testing.assert_array_equal(sdk["end"], ours.stimulus.end)
        np.testing.assert_array_equal(sdk["template"], ours.template())
        assert meta["targeted_structure"] == ours.area
        assert meta["cre_line"].split("/")[0] == ours.cre_line
        assert int(meta["imaging_depth_um"]) == ours.imaging_depth
        assert int(meta["ophys_experiment_id"]) == ours.experiment_id
        assert int(meta["experiment_container_id"]) == ours.container_id
        assert meta["session_type"] == "three_session_B"
        assert meta["pipeline_version"] == "3.0"


def test_discovery_on_real_cached_containers(sdk_python, tmp_path):
    root = real_fixtures()
    if root is None:
        pytest.skip("real Allen metadata (shared/data/allen) not present")
    cache = tmp_path / "cache"
    cache.mkdir()
    src = root / "brain_observatory_cache"
    for name in ("experiment_containers.json", "manifest.json", "stimulus_mappings.json"):
        shutil.copy(src / name, cache / name)
    raw = json.loads((src / "experiment_containers.json").read_text())
    out = tmp_path / "manifest.tsv"
    cmd = [
        str(sdk_python),
        "-m",
        "mice2machines.neural.allen",
        "discover",
        "--manifest-file",
        str(cache / "manifest.json"),
        "--out",
        str(out),
        "--areas",
        "VISp",
        "VISal",
        "--cre-lines",
        "Cux2-CreERT2",
        "Rorb-IRES2-Cre",
    ]
    env = {"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = read_manifest(out)
    expected = {
        e["id"]
        for c in raw
        if not c["failed"]
        and c["targeted_structure"]["acronym"] in {"VISp", "VISal"}
        and any(
            t["name"] in {"Cux2-CreERT2", "Rorb-IRES2-Cre"}
            for t in c["specimen"]["donor"]["transgenic_lines"]
        )
        for e in c["ophys_experiments"]
        if e["stimulus_name"] == "three_session_B"
    }
    assert {r["experiment_id"] for r in rows} == expected and len(rows) > 5
    assert {r["area"] for r in rows} == {"VISp", "VISal"}
    assert {r["ei_class"] for r in rows} == {"excitatory"}


@pytest.mark.workflow
def test_allen_config_plans_every_area_cre_line_and_model(sdk_python, tmp_path):
    """config/allen.yaml on the real Allen metadata: the discovery job runs (allensdk, offline
    cache), then the plan has a download and a conversion for every three_session_B experiment
    of the six areas and all Cre lines, an extraction and a comparison for every model of the
    paper-size zoo, and the figures. The downloads themselves need the network (not here)."""
    import yaml
    from conftest import copy_config, snakemake_cmd

    from mice2machines.models.zoo import read_zoo
    from mice2machines.settings import section

    root = real_fixtures()
    if root is None:
        pytest.skip("real Allen metadata (shared/data/allen) not present")
    copy_config(tmp_path)
    cfg = yaml.safe_load((ROOT / "config" / "allen.yaml").read_text())
    cfg["allen"] = section("allen", cfg.get("allen"))  # the config holds only non-defaults
    cfg["allen"]["python"] = str(sdk_python)
    (tmp_path / "config" / "allen.yaml").write_text(yaml.safe_dump(cfg))
    cache = tmp_path / cfg["allen"]["cache_dir"]
    cache.mkdir(parents=True)
    for name in ("experiment_containers.json", "manifest.json", "stimulus_mappings.json"):
        shutil.copy(root / "brain_observatory_cache" / name, cache / name)
    manifest = f"{cfg['results_dir']}/manifest.tsv"

    def snakemake(*args):
        proc = subprocess.run(
            snakemake_cmd(tmp_path, "--configfile", "config/allen.yaml", *args, timeout_s=600),
            capture_output=True,
            text=True,
        )
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        return proc.stdout + proc.stderr

    snakemake("--cores", "1", manifest)
    rows = read_manifest(tmp_path / manifest)
    raw = json.loads((root / "brain_observatory_cache" / "experiment_containers.json").read_text())
    kept = [
        c
        for c in raw
        if not c["failed"] and c["targeted_structure"]["acronym"] in cfg["allen"]["areas"]
    ]
    expected = {
        e["id"]
        for c in kept
        for e in c["ophys_experiments"]
        if e["stimulus_name"] == "three_session_B"
    }
    cre_lines = {
        t["name"]
        for c in kept
        for t in c["specimen"]["donor"]["transgenic_lines"]
        if t["transgenic_line_type_name"] == "driver" and "Cre" in t["name"]
    }
    assert {r["experiment_id"] for r in rows} == expected
    assert {r["area"] for r in rows} == set(cfg["allen"]["areas"])
    assert {r["cre_line"] for r in rows} == cre_lines and len(cre_lines) >= 6
    # this cache is of December 2017, before the inhibitory (Sst, Vip, Pvalb) lines were out;
    # their classification is tested on every real genotype spelling elsewhere
    assert {r["ei_class"] for r in rows} == {"excitatory"}

    plan = snakemake("-n", "--quiet", "rules")
    counts = {}
    for line in plan.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            counts[parts[0]] = int(parts[1])
    models = read_zoo(ROOT / cfg["models"]["table"])
    assert len(models) >= 25 and {m.weights_kind for m in models} >= {"random", "torchvision"}
    n = len(expected)
    assert counts.get("allen_download") == n and counts.get("nwb_to_zarr") == n, counts
    assert counts.get("fetch_weights") == counts.get("extract_activations") == len(models), counts
    assert counts.get("compare_model") == len(models), counts
    for rule in ("population", "stimuli", "compare_prepare", "compare_select"):
        assert counts.get(rule) == 1, (rule, counts)
    assert counts.get("compare_aggregate") == 1 and counts.get("compare_figures", 0) >= 1, counts
