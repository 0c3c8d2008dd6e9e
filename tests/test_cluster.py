"""mice2machines.cluster without SLURM: settings, schema, SLURM job script, local clusters."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import pytest
import yaml

from mice2machines.cluster import (
    DEFAULTS,
    dask_client,
    dask_settings,
    in_process,
    slurm_cluster_kwargs,
)

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "workflow" / "schemas" / "dask.schema.yaml"
SRC = ROOT / "src"


def test_settings_from_workflow_config_or_section():
    assert dask_settings(None) == DEFAULTS
    assert dask_settings({"source": "synthetic", "results_dir": "results"}) == DEFAULTS
    assert dask_settings({"dask": None}) == DEFAULTS
    s = dask_settings({"source": "synthetic", "dask": {"cluster": "slurm", "n_workers": 4}})
    assert s["cluster"] == "slurm" and s["n_workers"] == 4 and s["memory"] == "2GB"
    assert dask_settings({"cluster": "synchronous"})["cluster"] == "synchronous"


def test_settings_reject_unknown_keys_and_clusters():
    with pytest.raises(ValueError, match="unknown dask settings"):
        dask_settings({"dask": {"cluster": "slurm", "partition": "gpu"}})
    with pytest.raises(ValueError, match="dask.cluster"):
        dask_settings({"dask": {"cluster": "pbs"}})


def test_schema_defaults_match_code():
    from snakemake.utils import validate

    schema = yaml.safe_load(SCHEMA.read_text())
    assert set(schema["properties"]) == set(DEFAULTS)
    cfg: dict = {}
    validate(cfg, schema=str(SCHEMA))
    assert cfg == DEFAULTS
    bad = {"cluster": "slurm", "walltime": "1 hour"}
    with pytest.raises(Exception, match="walltime|does not match"):
        validate(copy.deepcopy(bad), schema=str(SCHEMA))


def test_slurm_job_script_carries_settings(tmp_path):
    pytest.importorskip("dask_jobqueue")
    from dask_jobqueue import SLURMCluster

    s = dask_settings(
        {
            "dask": {
                "cluster": "slurm",
                "cores": 4,
                "memory": "8GB",
                "queue": "bigmem",
                "account": "lab42",
                "walltime": "02:30:00",
                "job_extra_directives": ["--qos=short"],
                "job_script_prologue": ["module load python"],
                "log_directory": str(tmp_path),
            }
        }
    )
    kwargs = slurm_cluster_kwargs(s)
    assert "interface" not in kwargs and kwargs["cores"] == 4
    with SLURMCluster(**kwargs) as cluster:
        script = cluster.job_script()
    for line in (
        "#SBATCH -p bigmem",
        "#SBATCH -A lab42",
        "#SBATCH -t 02:30:00",
        "#SBATCH --cpus-per-task=4",
        "#SBATCH --mem=",
        "#SBATCH --qos=short",
        "module load python",
        f"#SBATCH -o {tmp_path}/m2m-dask-%J.out",
    ):
        assert line in script, script


def test_synchronous_yields_no_client():
    x = da.arange(10, chunks=3)
    with dask_client({"dask": {"cluster": "synchronous"}}) as client:
        assert client is None
        assert dask.config.get("scheduler") == "synchronous"
        assert int(x.sum().compute()) == 45


def test_small_inputs_stay_in_process():
    local = {"dask": {"cluster": "local", "in_process_mb": 100}}
    assert in_process(local, 99.5) and not in_process(local, 100) and not in_process(local, None)
    assert not in_process({"dask": {"cluster": "local", "in_process_mb": 0}}, 0.0)
    with dask_client(local, 5.0) as client:
        assert client is None
        assert dask.config.get("scheduler") == "synchronous"
    with dask_client(local, 500.0) as client:
        assert len(client.scheduler_info()["workers"]) == 1


def test_local_cluster_computes_like_numpy():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(200, 30))
    with dask_client({"dask": {"cluster": "local", "n_workers": 1, "memory": "1GB"}}) as client:
        assert len(client.scheduler_info()["workers"]) == 1
        got = da.from_array(a, chunks=(50, 30)).mean(axis=0).compute()
    np.testing.assert_allclose(got, a.mean(axis=0))


def test_local_cluster_in_unguarded_script(tmp_path):
    """A snakemake `script:` has no main guard: the local cluster must not re-import it."""
    script = tmp_path / "script.py"
    script.write_text(
        "import dask.array as da\n"
        "from mice2machines.cluster import dask_client\n"
        "with dask_client({'dask': {'cluster': 'local', 'n_workers': 2}}):\n"
        "    print('total', int(da.arange(100, chunks=10).sum().compute()))\n"
    )
    env = dict(os.environ, PYTHONPATH=str(SRC) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=120
    )
    assert r.returncode == 0 and "total 4950" in r.stdout, r.stderr[-2000:]


def test_local_cluster_does_not_pause_under_the_scripts_memory(tmp_path):
    """The script holds 4x the configured worker memory: the local workers still compute
    (a worker memory limit would count the whole process and pause them for good)."""
    script = tmp_path / "script.py"
    script.write_text(
        "import numpy as np, dask.array as da\n"
        "from mice2machines.cluster import dask_client\n"
        "held = np.ones(1024 * 2**20 // 8)  # 1 GB the script itself holds\n"
        "with dask_client({'dask': {'cluster': 'local', 'memory': '256MB'}}) as client:\n"
        "    limits = [w['memory_limit'] for w in client.scheduler_info()['workers'].values()]\n"
        "    total = int(da.ones((4000, 4000), chunks=500).sum().compute())\n"
        "print('total', total, 'limits', limits, 'held', held.nbytes)\n"
    )
    env = dict(os.environ, PYTHONPATH=str(SRC) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run(
        ["timeout", "-k", "5", "120", sys.executable, str(script)],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    assert "total 16000000 limits [0] held 1073741824" in r.stdout, r.stdout
    assert "memory usage" not in r.stderr, r.stderr[-2000:]


def test_slurm_plugin_reads_cancelled_by_uid_as_cancelled():
    """sacct writes `CANCELLED by 0` for a scancel'd job; the executor must see CANCELLED."""
    import asyncio
    import logging
    import shlex

    plugin = pytest.importorskip("snakemake_executor_plugin_slurm")
    from mice2machines.cluster import slurm_states_first_word

    assert slurm_states_first_word() and slurm_states_first_word()  # idempotent
    table = "22|CANCELLED by 0\n23|COMPLETED\n24|NODE_FAIL\n"
    cmd = shlex.join(["printf", table])
    states, _ = asyncio.run(plugin.query_job_status(cmd, logging.getLogger("test")))
    assert states == {"22": "CANCELLED", "23": "COMPLETED", "24": "NODE_FAIL"}
