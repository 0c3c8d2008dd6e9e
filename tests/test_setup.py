"""The one-time steps of a real run: `make profile` (so `snakemake --profile slurm` finds the
profile) and the account/partition that reach both the Snakemake jobs and the dask workers."""

import os
import shutil
import subprocess
import sys

import pytest
import yaml
from conftest import ROOT

from mice2machines.cluster import dask_settings, slurm_cluster_kwargs

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")

#: where snakemake looks for `--profile NAME` (its own search, run in a clean environment)
FIND_PROFILE = (
    "import os, sys\n"
    "from snakemake.cli import get_profile_dir\n"
    "os.chdir(sys.argv[1])\n"
    "found = get_profile_dir('slurm')\n"
    "print(os.path.realpath(found[0]) if found else 'none')\n"
)


def _env(home, xdg=None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "XDG_CONFIG_HOME"}
    env["HOME"] = str(home)
    if xdg:
        env["XDG_CONFIG_HOME"] = str(xdg)
    return env


def _found(env, cwd) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", FIND_PROFILE, str(cwd)], env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout.strip()


@pytest.mark.parametrize("use_xdg", [False, True])
def test_make_profile_links_slurm_into_the_user_config(tmp_path, use_xdg):
    home, xdg, elsewhere = tmp_path / "home", tmp_path / "xdg", tmp_path / "work"
    for d in (home, elsewhere):
        d.mkdir()
    env = _env(home, xdg if use_xdg else None)
    assert _found(env, elsewhere) == "none"
    for _ in range(2):  # a second run relinks quietly
        proc = subprocess.run(
            ["make", "-s", "-C", str(ROOT), "profile"], env=env, capture_output=True, text=True
        )
        assert proc.returncode == 0, proc.stderr
    link = (xdg if use_xdg else home / ".config") / "snakemake" / "slurm"
    assert link.is_symlink() and link.resolve() == (ROOT / "profiles" / "slurm").resolve()
    assert _found(env, elsewhere) == str((ROOT / "profiles" / "slurm").resolve())


def test_make_profile_keeps_a_profile_of_the_users_own(tmp_path):
    own = tmp_path / "xdg" / "snakemake" / "slurm"
    own.mkdir(parents=True)
    (own / "config.yaml").write_text("executor: slurm\n")
    proc = subprocess.run(
        ["make", "-s", "-C", str(ROOT), "profile"],
        env=_env(tmp_path, tmp_path / "xdg"),
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0 and "exists and is not a link" in proc.stderr
    assert (own / "config.yaml").read_text() == "executor: slurm\n"


def _profile_resources(env: dict) -> dict:
    """profiles/slurm/config.yaml's default-resources as snakemake reads it (yte)."""
    from yte import process_yaml

    saved = dict(os.environ)
    for key in ("M2M_SLURM_ACCOUNT", "M2M_SLURM_PARTITION"):
        os.environ.pop(key, None)
    os.environ.update(env)
    try:
        with open(ROOT / "profiles" / "slurm" / "config.yaml") as f:
            return process_yaml(f)["default-resources"]
    finally:
        os.environ.clear()
        os.environ.update(saved)


def test_account_and_partition_reach_jobs_and_dask_workers(tmp_path, monkeypatch):
    """M2M_SLURM_ACCOUNT / M2M_SLURM_PARTITION: the profile's job resources and the worker job
    script of config/allen.yaml's dask cluster both carry them; a dask key set wins."""
    from dask_jobqueue import SLURMCluster

    env = {"M2M_SLURM_ACCOUNT": "lab42", "M2M_SLURM_PARTITION": "bigmem"}
    res = _profile_resources(env)
    assert res["slurm_account"] == "lab42" and res["slurm_partition"] == "bigmem"
    assert not {"slurm_account", "slurm_partition"} & set(_profile_resources({}))

    allen = yaml.safe_load((ROOT / "config" / "allen.yaml").read_text())
    section = {**allen["dask"], "log_directory": str(tmp_path)}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with SLURMCluster(**slurm_cluster_kwargs(dask_settings(section))) as cluster:
        script = cluster.job_script()
    assert "#SBATCH -A lab42" in script and "#SBATCH -p bigmem" in script, script

    own = slurm_cluster_kwargs(dask_settings({**section, "queue": "cpu", "account": "other"}))
    assert own["queue"] == "cpu" and own["account"] == "other"
    for key in env:
        monkeypatch.delenv(key)
    bare = slurm_cluster_kwargs(dask_settings(section))
    assert "queue" not in bare and "account" not in bare
