"""Faults on the live SLURM (profiles/slurm/localcluster.sh, 3 nodes): a node lost mid-job
(its slurmd and the job killed), a drained node and a cancelled job, all in one run of the tiny
workflow (synthetic sessions to the population store) with the profile's retries.

The run must finish, equal an undisturbed local run and leave no temporary store behind. Each
fault hits another job, so the profile's one retry covers each. Every SLURM call runs under a
timeout and the cluster is healed afterwards (the drained node resumed, the slurmd restarted).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from test_slurm import (  # noqa: F401  (fixtures)
    POLL,
    REPO_IGNORE,
    ROOT,
    SCRIPT,
    SUBMITTED,
    compare_results,
    layout,
    slurm_cmd,
    slurm_env,
)

pytestmark = pytest.mark.slurm

RUN_DIR = Path(os.environ.get("M2M_SLURM_DIR", "/tmp/m2m-slurm")) / "run"
TARGET = "results/neural/population.zarr"
# tiny, but with one cell per written block, so that a conversion is seen mid-write
FAULT_CONFIG = {"synthetic": {"cells_per_experiment": 40}, "neural": {"cell_block": 1}}
DRAIN_REASON = "m2m-fault-test"


def _workdir(dest: Path) -> Path:
    wd = Path(shutil.copytree(ROOT, dest, ignore=REPO_IGNORE))
    tiny = yaml.safe_load((ROOT / "tests" / "data" / "tiny.yaml").read_text())
    for section, values in FAULT_CONFIG.items():
        tiny.setdefault(section, {}).update(values)
    (wd / "config" / "tiny.yaml").write_text(yaml.safe_dump(tiny))
    return wd


def _cmd(slurm: bool) -> list[str]:
    cmd = ["timeout", "-k", "30", "600", sys.executable, "-m", "snakemake"]
    cmd += ["--profile", "profiles/slurm", *POLL, "--verbose"] if slurm else ["--cores", "2"]
    return [*cmd, TARGET, "--configfile", "config/config.yaml", "config/tiny.yaml"]


def _running(env: dict) -> list[tuple[str, str, str]]:
    """(job id, node, rule_wildcards comment) of the running jobs."""
    out = slurm_cmd(env, "squeue", "-h", "-t", "R", "-o", "%i|%N|%k", timeout=20)
    return [tuple(line.split("|", 2)) for line in out.splitlines() if line.count("|") == 2]


def _kill_node(node: str) -> list[int]:
    """SIGKILL a node's slurmd and everything in its network namespace (the job)."""
    pids = {int((RUN_DIR / f"slurmd-{node}.pid").read_text().strip())}
    ns = subprocess.run(
        ["ip", "netns", "pids", f"m2m-{node}"], capture_output=True, text=True, timeout=10
    )
    pids |= {int(p) for p in ns.stdout.split()}
    for pid in sorted(pids):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return sorted(pids)


def _inject(env: dict, wd: Path, proc: subprocess.Popen, deadline: float) -> dict:
    """Drain the node of a running synthetic session, kill the node of a conversion that is
    writing its store, cancel the running population job; returns what was done to which job."""
    done: dict = {}
    experiments = wd / "results" / "neural" / "experiments"
    while proc.poll() is None and time.time() < deadline and len(done) < 3:
        for jid, node, comment in _running(env):
            if "drain" not in done and comment.startswith("rule_synthetic_session"):
                slurm_cmd(
                    env, "scontrol", "update", f"nodename={node}", "state=drain",
                    f"reason={DRAIN_REASON}",
                )  # fmt: skip
                done["drain"] = (jid, node, time.time())
            elif "kill" not in done and comment.startswith("rule_nwb_to_zarr"):
                eid = comment.rsplit("_", 1)[1]
                if list(experiments.glob(f".{eid}.zarr.tmp-*")):  # mid-write
                    done["kill"] = (jid, node, _kill_node(node), eid)
            elif "cancel" not in done and comment.startswith("rule_population"):
                slurm_cmd(env, "scancel", jid)
                done["cancel"] = (jid, node)
        time.sleep(0.1)
    return done


def _heal(env: dict, done: dict) -> None:
    if "drain" in done:
        node = done["drain"][1]
        subprocess.run(
            ["scontrol", "update", f"nodename={node}", "state=resume"], env=env, timeout=20
        )
    subprocess.run(["bash", str(SCRIPT), "start"], env=env, timeout=120, capture_output=True)


def _sacct(env: dict, job_ids: list[str]) -> dict[str, tuple[str, str, str]]:
    """{job id: (state, node list, start)} of the jobs' allocations."""
    out = slurm_cmd(
        env, "sacct", "-X", "-n", "-P", "-j", ",".join(job_ids), "-o", "JobID,State,NodeList,Start"
    )
    rows = (line.split("|") for line in out.splitlines() if line.strip())
    return {r[0]: (r[1].split()[0], r[2], r[3]) for r in rows}


@pytest.mark.slow
def test_lost_node_drain_and_scancel_survived(slurm_env, layout, tmp_path):  # noqa: F811
    if not layout.multi:
        pytest.skip("needs the multi-node cluster (a lost node must leave others)")
    wd, local = _workdir(tmp_path / "slurm"), _workdir(tmp_path / "local")
    env = {**slurm_env, "PYTHONPATH": str(wd / "src")}
    # output to files: a full pipe would block snakemake while the faults are injected
    with open(local / "run.log", "w") as lo, open(wd / "run.log", "w") as so:
        local_proc = subprocess.Popen(
            _cmd(slurm=False), cwd=local, env={**env, "PYTHONPATH": str(local / "src")},
            stdout=lo, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        proc = subprocess.Popen(
            _cmd(slurm=True), cwd=wd, env=env, stdout=so, stderr=subprocess.STDOUT, text=True
        )
        done = {}
        try:
            done = _inject(slurm_env, wd, proc, time.time() + 540)
            proc.wait(timeout=600)
            local_proc.wait(timeout=600)
        finally:
            for p in (proc, local_proc):
                if p.poll() is None:
                    p.kill()
            _heal(slurm_env, done)
    out, local_out = (wd / "run.log").read_text(), (local / "run.log").read_text()
    assert local_proc.returncode == 0, local_out[-3000:]
    assert sorted(done) == ["cancel", "drain", "kill"], (done, out[-3000:])
    assert proc.returncode == 0, out[-5000:]

    submitted = {jid: log for _, jid, log in SUBMITTED.findall(out)}
    acct = _sacct(slurm_env, list(submitted))
    drained_job, drained, t_drain = done["drain"]
    killed_job, lost, _, eid = done["kill"]
    cancelled_job, _ = done["cancel"]
    assert acct[drained_job][:2] == ("COMPLETED", drained)  # a drained node finishes its jobs
    assert acct[killed_job][:2] == ("NODE_FAIL", lost), acct
    assert acct[cancelled_job][0] == "CANCELLED", acct
    # each hit job ran again (the profile's retry) and completed elsewhere
    for rule, hit, avoid in [
        (f"rule_nwb_to_zarr/{eid}/", killed_job, {drained, lost}),
        ("rule_population/", cancelled_job, {drained, lost}),
    ]:
        attempts = [j for j, log in submitted.items() if rule in log]
        assert len(attempts) == 2 and hit in attempts, (rule, attempts)
        (retry,) = set(attempts) - {hit}
        assert acct[retry][0] == "COMPLETED" and acct[retry][1] not in avoid, acct[retry]
    # nothing started on the drained node after the drain
    late = [j for j, (_, _, start) in acct.items() if start > time.strftime(
        "%Y-%m-%dT%H:%M:%S", time.localtime(t_drain + 1))]  # fmt: skip
    assert late and all(acct[j][1] != drained for j in late), acct

    left = [str(p) for p in (wd / "results").rglob("*") if re.search(r"\.tmp-", p.name)]
    assert left == [], left
    checked = compare_results(wd, local)
    assert TARGET in checked and f"results/neural/experiments/{eid}.zarr" in checked
