"""profiles/slurm on a live SLURM (profiles/slurm/localcluster.sh) and dask on SLURM.

Skipped unless the local cluster answers; with CI=true and M2M_REQUIRE_SLURM=1 a missing
cluster fails instead. Every snakemake call runs under `timeout -k 30 N` and every SLURM client
call under a subprocess timeout: a hung status poll fails the test instead of CI.

The local cluster has 3 compute nodes by default, each in its own network namespace (its own
address on a bridge; the login side, where snakemake and the tests run, is the bridge address):
jobs must spread over the nodes, GPU jobs land on the one node with the (fake) GPU, and dask
workers on the nodes reach a scheduler on the login side through the cluster's interface
(`localcluster.sh env` names it). `--nodes 1` (M2M_SLURM_NODES=1) tests the single node.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "profiles" / "slurm" / "localcluster.sh"
FIXTURE = ROOT / "tests" / "data" / "slurm_wf"
REQUIRED = os.environ.get("CI") == "true" and os.environ.get("M2M_REQUIRE_SLURM") == "1"
ACCOUNT = os.environ.get("M2M_SLURM_ACCOUNT", "m2m")
# the node count localcluster.sh starts by default (CI checks that it really runs that many)
NODES = int(os.environ.get("M2M_SLURM_NODES", "3"))
CLIENT_TIMEOUT = 60  # seconds for one SLURM client call (sacct, sinfo, srun)
# first status poll after 5 s (the profile's 20 s suits real clusters); then +10 s per poll
POLL = ["--slurm-init-seconds-before-status-checks", "5", "--seconds-between-status-checks", "1"]
SUBMITTED = re.compile(r"Job (\d+) has been submitted with SLURM jobid (\d+) \(log: (\S+)\)")
SBATCH = re.compile(r"^sbatch call: (sbatch .*)$", re.M)

pytestmark = pytest.mark.slurm


def _unavailable() -> str | None:
    """Why the local SLURM cannot be used here, or None."""
    if os.name != "posix" or os.geteuid() != 0:
        return "not root"
    if not Path("/etc/debian_version").exists():
        return "not Debian"
    if shutil.which("srun") is None:
        return "SLURM is not installed (bash profiles/slurm/localcluster.sh start)"
    try:
        r = subprocess.run(
            ["bash", str(SCRIPT), "status"], capture_output=True, text=True, timeout=90
        )
    except subprocess.TimeoutExpired:
        return "localcluster.sh status timed out"
    if r.returncode:
        return f"local SLURM is not running (localcluster.sh start):\n{r.stderr[-1000:]}"
    return None


@pytest.fixture(scope="module")
def slurm_env() -> dict[str, str]:
    """Environment for SLURM clients; skips (or fails under required CI) without a cluster."""
    why = _unavailable()
    if why:
        if REQUIRED:
            pytest.fail(f"CI=true and M2M_REQUIRE_SLURM=1 but {why}")
        pytest.skip(why)
    out = subprocess.run(
        ["bash", str(SCRIPT), "env"], capture_output=True, text=True, check=True, timeout=30
    ).stdout
    # `export SLURM_CONF=...` and `export M2M_SLURM_INTERFACE=...` (the dask interface)
    exports = dict(
        line.removeprefix("export ").split("=", 1) for line in out.splitlines() if "=" in line
    )
    env = dict(os.environ, **exports, M2M_SLURM_ACCOUNT=ACCOUNT)
    env.setdefault("M2M_SLURM_INTERFACE", "lo")
    env.pop("SNAKEMAKE_SLURM_PARTITIONS", None)
    return env


def slurm_cmd(env: dict, *args: str, timeout: int = CLIENT_TIMEOUT) -> str:
    """stdout of a SLURM client command, under a hard timeout."""
    return subprocess.run(
        args, capture_output=True, text=True, env=env, check=True, timeout=timeout
    ).stdout


@pytest.fixture(scope="module")
def layout(slurm_env) -> SimpleNamespace:
    """The running cluster's nodes: names, addresses, the GPU node, the login-side address."""
    addrs, gres = {}, {}
    for line in slurm_cmd(slurm_env, "scontrol", "show", "node", "-o").splitlines():
        fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
        addrs[fields["NodeName"]] = fields["NodeAddr"]
        gres[fields["NodeName"]] = fields.get("Gres", "(null)")
    iface = slurm_env["M2M_SLURM_INTERFACE"]
    import psutil  # a dependency of distributed

    login = [a.address for a in psutil.net_if_addrs().get(iface, []) if a.family.name == "AF_INET"]
    return SimpleNamespace(
        nodes=sorted(addrs),
        addrs=addrs,
        gpu_nodes=sorted(n for n, g in gres.items() if "gpu" in g),
        multi=len(addrs) > 1,
        iface=iface,
        login=login,
    )


def node_lists(env: dict, job_ids: list[str]) -> dict[str, str]:
    """NodeList of each job (its allocation), from sacct."""
    out = slurm_cmd(env, "sacct", "-X", "-n", "-P", "-j", ",".join(job_ids), "-o", "JobID,NodeList")
    return dict(line.split("|", 1) for line in out.splitlines() if line.strip())


class Run:
    """One finished snakemake call: exit code, output, parsed submissions."""

    def __init__(self, proc: subprocess.CompletedProcess, log: Path):
        self.rc = proc.returncode
        self.out = proc.stdout + proc.stderr
        log.write_text(self.out)
        self.log = log
        self.sbatch = SBATCH.findall(self.out)
        self.submitted = SUBMITTED.findall(self.out)

    def jobs(self) -> list[str]:
        """Submitted jobs as rule[wildcards] from the --comment of each sbatch call."""
        out = []
        for call in self.sbatch:
            comment = re.search(r"--comment (\S+)", call).group(1).strip("'")
            rule, _, wc = comment.removeprefix("rule_").partition("_wildcards_")
            out.append(f"{rule}[{wc}]" if wc else rule)
        return sorted(out)

    def calls(self, rule: str) -> list[str]:
        return [c for c in self.sbatch if re.search(rf"--comment '?rule_{rule}(_wildcards|'| )", c)]


def snakemake(wd: Path, env: dict, *args: str, slurm: bool = True, limit: int = 300) -> Run:
    """Run snakemake in wd under a hard timeout; slurm=True uses --profile profiles/slurm."""
    cmd = ["timeout", "-k", "30", str(limit), sys.executable, "-m", "snakemake"]
    cmd += ["--profile", "profiles/slurm", *POLL, "--verbose"] if slurm else ["--cores", "2"]
    proc = subprocess.run([*cmd, *args], cwd=wd, env=env, capture_output=True, text=True)
    n = len(list(wd.glob("run*.log")))
    run = Run(proc, wd / f"run{n}.log")
    assert run.rc != 124, f"snakemake hung (timeout {limit} s); log: {run.log}"
    return run


def dag_jobs(wd: Path, env: dict, *args: str) -> list[str]:
    """Rules of all jobs a run would execute (a dry run's job list)."""
    run = snakemake(wd, env, "--dry-run", *args)
    assert run.rc == 0, run.out[-3000:]
    return sorted(re.findall(r"^(?:local)?rule (\w+):$", run.out, re.M))


def executed(run: Run) -> tuple[list[str], list[str]]:
    """Rules a real run executed on SLURM (`rule X:`) and locally (`localrule X:`)."""
    remote = re.findall(r"^rule (\w+):$", run.out, re.M)
    return sorted(remote), sorted(re.findall(r"^localrule (\w+):$", run.out, re.M))


def copy_workflow(src: Path, dest: Path) -> Path:
    """The fixture workflow plus this repository's profiles (profiles/default is auto-loaded)."""
    shutil.copytree(src, dest)
    shutil.copytree(ROOT / "profiles", dest / "profiles")
    return dest


def read_outputs(wd: Path) -> dict[str, str]:
    return {str(p.relative_to(wd)): p.read_text() for p in sorted((wd / "results").rglob("*.txt"))}


def mtimes(wd: Path) -> dict[str, int]:
    return {
        str(p.relative_to(wd)): p.stat().st_mtime_ns
        for p in (wd / "results").rglob("*")
        if p.is_file()
    }


@pytest.fixture(scope="module")
def wf(slurm_env, tmp_path_factory) -> SimpleNamespace:
    """The fixture workflow, run once to completion on SLURM (checked in the first test)."""
    wd = copy_workflow(FIXTURE, tmp_path_factory.mktemp("slurm") / "wf")
    expected = dag_jobs(wd, slurm_env)
    return SimpleNamespace(dir=wd, expected=expected, first=snakemake(wd, slurm_env))


def test_profile_runs_workflow_like_local(wf, slurm_env, tmp_path):
    wd = wf.dir
    run = wf.first
    assert run.rc == 0, run.out[-4000:]
    # every DAG job ran; one sbatch per non-local job; localrules (download, all) stay local
    remote, local_rules = executed(run)
    assert sorted(remote + local_rules) == wf.expected and local_rules == ["all", "download"]
    assert len(run.sbatch) == len(run.submitted) == len(remote) == 5
    assert sorted(j.split("[")[0] for j in run.jobs()) == remote
    assert all(f"-A {ACCOUNT}" in c for c in run.sbatch)
    assert all(re.search(r" -t \d+", c) and re.search(r" --mem \d+", c) for c in run.sbatch)
    assert any("--cpus-per-task=2" in c for c in run.calls("summary"))  # threads: 2
    local = copy_workflow(FIXTURE, tmp_path / "local")
    assert snakemake(local, slurm_env, slurm=False).rc == 0
    assert read_outputs(wd) == read_outputs(local)


def test_cluster_layout(slurm_env, layout):
    """Every node answers srun as itself (own hostname, own address); one GPU node."""
    n = len(layout.nodes)
    if REQUIRED:
        assert n == NODES, f"localcluster.sh should run {NODES} node(s), sinfo shows {layout.nodes}"
    assert len(layout.gpu_nodes) == 1
    parts = dict(
        line.split()
        for line in slurm_cmd(slurm_env, "sinfo", "-h", "-a", "-o", "%R %N").splitlines()
    )
    expand = ["scontrol", "show", "hostnames"]
    assert slurm_cmd(slurm_env, *expand, parts["cpu"]).split() == layout.nodes
    assert slurm_cmd(slurm_env, *expand, parts["gpu"]).split() == layout.gpu_nodes
    script = f'echo "$SLURMD_NODENAME $(hostname) $(ip -4 -o addr show dev {layout.iface})"'
    out = slurm_cmd(
        slurm_env, "timeout", "-k", "5", "50", "srun", "-N", str(n), "-n", str(n),
        "--ntasks-per-node=1", "-t", "1", "bash", "-c", script,
    )  # fmt: skip
    seen = {}
    for line in out.splitlines():
        node, host, *ip = line.split()
        seen[node] = (host, ip[3].split("/")[0] if len(ip) > 3 else None)
    assert sorted(seen) == layout.nodes
    if layout.multi:  # each node its own host: hostname and the address slurmctld knows
        assert all(seen[n] == (n, layout.addrs[n]) for n in layout.nodes), seen
        assert layout.login and not set(layout.login) & set(layout.addrs.values())


def test_jobs_spread_over_nodes(wf, slurm_env, layout):
    """The fixture run's jobs ran on the cluster's nodes, GPU jobs on the GPU node only."""
    run = wf.first
    assert run.rc == 0, run.out[-4000:]
    rule_of = {jid: re.search(r"rule_(\w+?)/", log).group(1) for _, jid, log in run.submitted}
    where = node_lists(slurm_env, list(rule_of))
    assert sorted(where) == sorted(rule_of)
    assert set(where.values()) <= set(layout.nodes), where
    gpu = {where[j] for j, rule in rule_of.items() if rule == "per_model"}
    assert gpu == set(layout.gpu_nodes), where
    if layout.multi:
        assert len(set(where.values())) >= 2, f"all jobs on one node: {where}"


def test_gpu_rule_gets_gpu(wf, slurm_env, layout):
    wd = wf.dir
    run = wf.first
    gpu_calls = run.calls("per_model")
    assert len(gpu_calls) == 2
    assert all("--gpus=1" in c and " -p gpu" in c for c in gpu_calls)
    cpu_calls = [c for c in run.sbatch if c not in gpu_calls]
    assert cpu_calls and all("--gpus" not in c and " -p cpu" in c for c in cpu_calls)
    for model in ("m1", "m2"):
        log = (wd / "logs" / "per_model" / f"{model}.log").read_text()
        gpus, job = re.fullmatch(r"gpus=(\S*) job=(\d+)\n", log).groups()
        assert gpus == "0"  # CUDA_VISIBLE_DEVICES of the fake gres
        acct = slurm_cmd(
            slurm_env, "sacct", "-X", "-n", "-P", "-j", job, "-o",
            "Partition,AllocTRES,State,NodeList",
        )  # fmt: skip
        assert acct.startswith("gpu|") and "gres/gpu=1" in acct and "COMPLETED" in acct
        assert acct.strip().rsplit("|", 1)[1] in layout.gpu_nodes  # the node with the GPU


def test_unchanged_rerun_submits_nothing(wf, slurm_env):
    wd = wf.dir
    before = mtimes(wd)
    run = snakemake(wd, slurm_env)
    assert run.rc == 0, run.out[-3000:]
    assert run.sbatch == [] and "Nothing to be done" in run.out
    assert mtimes(wd) == before


def test_touched_input_reruns_only_downstream(wf, slurm_env):
    wd = wf.dir
    before = mtimes(wd)
    # a new value (snakemake skips a merely touched input whose checksum it has stored)
    with open(wd / "data" / "e1.txt", "a") as f:
        f.write("100\n")
    run = snakemake(wd, slurm_env)
    assert run.rc == 0, run.out[-3000:]
    assert run.jobs() == ["per_experiment[e1]", "summary"]
    after = mtimes(wd)
    changed = {k for k in before if after[k] != before[k]}
    assert changed == {"results/exp/e1.txt", "results/summary.txt"}


def test_changed_param_reruns_its_rule(wf, slurm_env):
    wd = wf.dir
    run = snakemake(wd, slurm_env, "--config", "label=total")
    assert run.rc == 0, run.out[-3000:]
    assert run.jobs() == ["summary"]
    assert (wd / "results" / "summary.txt").read_text().startswith("total\n")


def test_failure_names_slurm_log_and_rerun_completes(wf, slurm_env):
    wd = wf.dir
    data = wd / "data" / "e2.txt"
    good = data.read_text()
    keep = ["results/exp/e1.txt", "results/model/m1.txt", "results/model/m2.txt"]
    before = {k: ((wd / k).read_text(), (wd / k).stat().st_mtime_ns) for k in keep}
    data.write_text(good + "not a number\n")
    run = snakemake(wd, slurm_env, "--retries", "0")  # the profile's retry would only repeat it
    assert run.rc == 1, run.out[-3000:]
    logs = re.findall(r"(\S*\.snakemake/slurm_logs/rule_per_experiment/e2/(\d+)\.log)", run.out)
    assert logs, run.out[-3000:]
    path, _ = logs[-1]
    assert "corrupt input: data/e2.txt" in Path(path).read_text()
    assert "Error in rule per_experiment" in run.out
    assert not (wd / "results" / "exp" / "e2.txt").exists()
    after = {k: ((wd / k).read_text(), (wd / k).stat().st_mtime_ns) for k in keep}
    assert after == before  # other jobs' outputs intact

    data.write_text(good)
    run = snakemake(wd, slurm_env)
    assert run.rc == 0, run.out[-3000:]
    assert run.jobs() == ["per_experiment[e2]", "summary"]  # summary: e2 and label changed
    assert "Nothing to be done" in snakemake(wd, slurm_env, "--dry-run").out


DEMO_CONFIG = ["--configfile", "config/config.yaml", "tests/data/slurm_demo.yaml"]
REPO_IGNORE = shutil.ignore_patterns(
    "results", "resources", "logs", ".snakemake", ".git", ".venv*", ".whl", ".device",
    "benchmarks", "__pycache__", ".pytest_cache", ".ruff_cache", "*.egg-info",
)  # fmt: skip


# compare scores differ between two local runs too (rsa_spearman on near-constant deep layers of
# random nets, ~0.007): not a SLURM effect, so they get an absolute tolerance
LOOSE_ATOL = 0.02


def compare_results(a: Path, b: Path) -> list[str]:
    """Compare every zarr store and table under a/results with b/results; return what was checked."""
    import pandas as pd
    import zarr

    checked = []
    stores = sorted(p.relative_to(a) for p in (a / "results").rglob("*.zarr") if p.is_dir())
    assert stores
    for rel in stores:
        ga, gb = zarr.open_group(a / rel, mode="r"), zarr.open_group(b / rel, mode="r")
        ma = {k: v for k, v in ga.members(max_depth=None) if isinstance(v, zarr.Array)}
        mb = {k: v for k, v in gb.members(max_depth=None) if isinstance(v, zarr.Array)}
        assert sorted(ma) == sorted(mb), rel
        for key, arr in ma.items():
            x, y = arr[...], mb[key][...]
            if np.issubdtype(x.dtype, np.number):
                atol = LOOSE_ATOL if str(rel).startswith("results/compare/") else 1e-8
                np.testing.assert_allclose(x, y, rtol=1e-5, atol=atol, err_msg=f"{rel}/{key}")
            else:
                np.testing.assert_array_equal(x, y, err_msg=f"{rel}/{key}")
        checked.append(str(rel))
    for table in sorted((a / "results").rglob("*.[tc]sv")):
        rel = table.relative_to(a)
        sep = "\t" if table.suffix == ".tsv" else ","
        if not table.read_text().strip():  # an empty table
            assert not (b / rel).read_text().strip(), rel
            continue
        pd.testing.assert_frame_equal(
            pd.read_csv(a / rel, sep=sep, comment="#"),
            pd.read_csv(b / rel, sep=sep, comment="#"),
            check_exact=False,
            rtol=1e-5,
            atol=LOOSE_ATOL if str(rel).startswith("results/compare/") else 1e-8,
        )
        checked.append(str(rel))
    return checked


@pytest.mark.slow
def test_demo_workflow_on_slurm_equals_local(slurm_env, layout, tmp_path):
    """The demo (cut down) on SLURM, population via a dask SLURMCluster, equals a local run."""
    wd = Path(shutil.copytree(ROOT, tmp_path / "slurm", ignore=REPO_IGNORE))
    local = Path(shutil.copytree(ROOT, tmp_path / "local", ignore=REPO_IGNORE))
    dask_cfg = tmp_path / "dask_slurm.yaml"
    dask_cfg.write_text(
        "dask: {cluster: slurm, n_workers: 1, cores: 1, memory: 1GB, queue: cpu,"
        f" account: {ACCOUNT}, walltime: '00:30:00', interface: {layout.iface}, timeout: 600}}\n"
    )
    cfg = [*DEMO_CONFIG, str(dask_cfg)]
    # jobs import the copied package, not the (editable, maybe changing) checkout
    slurm_env = {**slurm_env, "PYTHONPATH": str(wd / "src")}
    local_env = {**slurm_env, "PYTHONPATH": str(local / "src")}
    expected = dag_jobs(wd, slurm_env, *cfg)
    # the local reference runs alongside (its CPU use overlaps the SLURM run's polling)
    local_proc = subprocess.Popen(
        ["timeout", "-k", "30", "900", sys.executable, "-m", "snakemake", "--cores", "2",
         *DEMO_CONFIG],
        cwd=local, env=local_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    t0 = time.strftime("%Y-%m-%dT%H:%M:%S")
    run = snakemake(wd, slurm_env, *cfg, limit=900)
    local_out = local_proc.communicate()[0]
    (local / "local.log").write_text(local_out)
    assert run.rc == 0, run.out[-4000:]
    assert local_proc.returncode == 0, local_out[-4000:]

    remote, local_rules = executed(run)
    assert sorted(remote + local_rules) == expected
    assert "fetch_weights" in local_rules and "fetch_weights" not in remote
    assert len(run.sbatch) == len(run.submitted) == len(remote)
    gpu_calls = run.calls("extract_activations")
    assert len(gpu_calls) == 2 and all("--gpus=1" in c and " -p gpu" in c for c in gpu_calls)
    assert all("--gpus" not in c for c in run.sbatch if c not in gpu_calls)
    # population assembled by dask workers that were SLURM jobs of their own
    workers = slurm_cmd(
        slurm_env, "sacct", "-X", "-n", "-P", "--name", "m2m-dask", "-S", t0, "-o",
        "JobID,State,NodeList",
    ).splitlines()  # fmt: skip
    assert workers, "no dask worker job ran on SLURM"
    # ... on the compute nodes (one line per job: State may read "CANCELLED by 0")
    assert all(w.rsplit("|", 1)[1] in layout.nodes for w in workers), workers
    # the rule jobs ran on the nodes, spread over them; the GPU jobs on the GPU node
    where = node_lists(slurm_env, [jid for _, jid, _ in run.submitted])
    assert set(where.values()) <= set(layout.nodes), where
    gpu_ids = [jid for _, jid, log in run.submitted if "rule_extract_activations/" in log]
    assert len(gpu_ids) == 2 and {where[j] for j in gpu_ids} == set(layout.gpu_nodes), where
    if layout.multi:
        assert len(set(where.values())) >= 2, f"all jobs on one node: {where}"
    checked = compare_results(wd, local)
    assert "results/neural/population.zarr" in checked


AGGREGATE = r"""
import json, os, sys
import dask.array as da
import numpy as np
from mice2machines.cluster import dask_client

cfg = json.loads(sys.argv[1])
x = da.from_array(np.random.default_rng(0).normal(size=(400, 118, 4)), chunks=(50, 118, 4))
with dask_client(cfg) as client:
    cell_mean, grand = da.compute(x.mean(axis=(1, 2)), x.mean())
    jobs = client.run(lambda: os.environ.get("SLURM_JOB_ID")).values()
    nodes = client.run(lambda: os.environ.get("SLURMD_NODENAME"))
    scheduler = client.scheduler_info()["address"]
print(json.dumps({"grand": float(grand), "cell_mean": np.asarray(cell_mean).tolist(),
                  "jobs": sorted(str(j) for j in set(jobs)), "workers": nodes,
                  "scheduler": scheduler}))
"""


def _host(address: str) -> str:
    """The host of a dask address such as tcp://10.77.0.11:40123."""
    return address.split("://", 1)[-1].rsplit(":", 1)[0]


def _aggregate(client_cfg: dict, env: dict) -> tuple[float, np.ndarray, set, dict]:
    """A population-style reduction (per-cell mean and grand mean) on the configured cluster.

    Runs in a fresh interpreter under a hard timeout: a cluster left over from another test
    in this process could otherwise deadlock the suite.
    """
    proc = subprocess.run(
        ["timeout", "-k", "10", "300", sys.executable, "-c", AGGREGATE, json.dumps(client_cfg)],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    return out["grand"], np.asarray(out["cell_mean"]), set(out["jobs"]), out


def test_dask_on_slurm_cluster_equals_local(slurm_env, layout, tmp_path):
    env = {**os.environ, **slurm_env, "PYTHONPATH": str(ROOT / "src")}
    common = {"n_workers": 2, "cores": 1, "memory": "1GB", "timeout": 120}
    slurm = {
        "dask": {
            **common,
            "cluster": "slurm",
            "queue": "cpu",
            "account": ACCOUNT,
            "walltime": "00:10:00",
            "interface": layout.iface,  # the bridge: reaches the nodes from the login side
            "log_directory": str(tmp_path / "dask-logs"),
        }
    }
    g_slurm, m_slurm, jobs, info = _aggregate(slurm, env)
    g_local, m_local, local_jobs, _ = _aggregate({"dask": {**common, "cluster": "local"}}, env)
    assert len(jobs) == 2 and "None" not in jobs  # two workers, each its own SLURM job
    assert local_jobs == {"None"}
    # each worker runs on a compute node, at that node's address, and reached the scheduler here
    workers = info["workers"]  # worker address -> SLURMD_NODENAME
    assert len(workers) == 2 and set(workers.values()) <= set(layout.nodes), workers
    assert all(_host(w) == layout.addrs[node] for w, node in workers.items()), workers
    if layout.multi:
        assert _host(info["scheduler"]) in layout.login, (info["scheduler"], layout.login)
        net = ipaddress.ip_network(f"{_host(info['scheduler'])}/24", strict=False)
        assert all(ipaddress.ip_address(_host(w)) in net for w in workers), workers
    assert g_slurm == pytest.approx(g_local, rel=1e-12, abs=1e-15)
    np.testing.assert_allclose(m_slurm, m_local, rtol=1e-12)
