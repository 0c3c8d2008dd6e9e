"""Dask clusters for the aggregation stages: workers as SLURM jobs, or local.

Usage (a workflow script)::

    with dask_client(config) as client:   # config: the workflow config (or its `dask:` part)
        result = lazy_thing.compute()     # runs on whatever the `dask:` section chose

Keys of the top-level ``dask:`` config section (workflow/schemas/dask.schema.yaml):

cluster          ``local`` (default): a LocalCluster of thread workers in this process;
                 ``slurm``: a dask-jobqueue SLURMCluster, each worker one SLURM job;
                 ``synchronous``: no cluster, single-threaded (tiny data, debugging).
n_workers        workers (= SLURM jobs for ``slurm``); default 1.
cores            cores per worker (threads; ``--cpus-per-task``); default 1.
memory           memory per worker, e.g. ``"4GB"`` (``--mem``); default ``"2GB"``.
processes        worker processes per SLURM job; default 1 (``local`` uses threads).
queue            SLURM partition of the worker jobs; default: ``$M2M_SLURM_PARTITION`` (the
                 SLURM profile's variable), else the cluster's default.
account          SLURM account (``-A``); default: ``$M2M_SLURM_ACCOUNT`` (the SLURM profile's
                 variable), else none (the cluster's default account).
walltime         worker job time limit, ``"HH:MM:SS"``; default ``"01:00:00"``.
interface        network interface the scheduler and workers talk on (``ib0``, ``lo``...);
                 default: the host's address.
job_extra_directives  extra ``#SBATCH`` options, e.g. ``["--qos=short"]``.
job_script_prologue   shell lines run before a worker starts (``module load ...``).
local_directory  worker scratch directory; default: dask's temporary directory.
log_directory    where worker job logs go (``slurm``); default ``logs/dask``.
timeout          seconds to wait for the workers before failing; default 300.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from typing import Any

from .settings import defaults

#: the dask section's defaults (schemas/dask.schema.yaml)
DEFAULTS: dict[str, Any] = defaults("dask")
#: where the worker jobs' partition and account come from when the config leaves them unset:
#: the variables profiles/slurm/config.yaml reads for the Snakemake jobs (one place for both)
SLURM_ENV = {"queue": "M2M_SLURM_PARTITION", "account": "M2M_SLURM_ACCOUNT"}
CLUSTERS = ("local", "slurm", "synchronous")


def dask_settings(cfg: Mapping | None = None) -> dict[str, Any]:
    """The ``dask:`` settings of a workflow config (or of the section itself), with defaults."""
    cfg = dict(cfg or {})
    if "dask" in cfg:
        section = dict(cfg["dask"] or {})
        unknown = set(section) - set(DEFAULTS)
        if unknown:
            raise ValueError(f"unknown dask settings: {sorted(unknown)}")
    elif set(cfg) <= set(DEFAULTS):
        section = cfg  # the section itself
    else:
        section = {}  # a workflow config without a dask section
    out = {**DEFAULTS, **section}
    if out["cluster"] not in CLUSTERS:
        raise ValueError(f"dask.cluster must be one of {CLUSTERS}, not {out['cluster']!r}")
    return out


def slurm_cluster_kwargs(settings: Mapping[str, Any]) -> dict[str, Any]:
    """Keyword arguments for ``dask_jobqueue.SLURMCluster`` from dask settings."""
    s = {**DEFAULTS, **settings}
    kwargs: dict[str, Any] = {
        "cores": int(s["cores"]),
        "processes": int(s["processes"]),
        "memory": str(s["memory"]),
        "walltime": s["walltime"],
        "job_name": "m2m-dask",
        "python": sys.executable,
        "job_extra_directives": list(s["job_extra_directives"]),
        "job_script_prologue": list(s["job_script_prologue"]),
        "scheduler_options": {"dashboard_address": ":0"},  # random port, no clash
    }
    for key, var in SLURM_ENV.items():
        s[key] = s[key] or os.environ.get(var) or None
    for key in ("queue", "account", "interface", "local_directory", "log_directory"):
        if s[key]:
            kwargs[key] = str(s[key])
    return kwargs


def _squeue() -> str:
    try:
        return subprocess.run(
            ["squeue", "--me", "-o", "%i %j %T %R"], capture_output=True, text=True, timeout=20
        ).stdout
    except (OSError, subprocess.SubprocessError) as err:
        return f"(squeue failed: {err})"


@contextlib.contextmanager
def dask_client(cfg: Mapping | None = None) -> Iterator[Any]:
    """Yield a distributed Client on the cluster the ``dask:`` settings ask for.

    Yields None for ``cluster: synchronous`` (dask's synchronous scheduler is active inside
    the block). Workers, SLURM jobs and the scheduler are shut down on exit.
    """
    import dask

    s = dask_settings(cfg)
    if s["cluster"] == "synchronous":
        with dask.config.set(scheduler="synchronous"):
            yield None
        return

    from distributed import Client, LocalCluster

    n = int(s["n_workers"])
    if s["cluster"] == "slurm":
        from dask_jobqueue import SLURMCluster

        kwargs = slurm_cluster_kwargs(s)
        if kwargs.get("log_directory"):
            os.makedirs(kwargs["log_directory"], exist_ok=True)
        cluster = SLURMCluster(**kwargs)
    else:
        # thread workers inside this process: worker processes would be spawned, and spawning
        # re-imports __main__, which a snakemake `script:` (no main guard) cannot survive
        cluster = LocalCluster(
            n_workers=n,
            threads_per_worker=int(s["cores"]),
            processes=False,
            memory_limit=s["memory"],
            local_directory=s["local_directory"],
            dashboard_address=":0",
        )
    with cluster, Client(cluster) as client:
        if s["cluster"] == "slurm":
            cluster.scale(jobs=n)
            try:
                client.wait_for_workers(n * int(s["processes"]), timeout=float(s["timeout"]))
            except TimeoutError as err:
                raise TimeoutError(
                    f"{n} dask worker job(s) did not start within {s['timeout']} s; "
                    f"worker logs: {s['log_directory']}; squeue:\n{_squeue()}"
                ) from err
        yield client
