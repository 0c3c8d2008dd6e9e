"""Dask clusters for the aggregation stages: workers as SLURM jobs, or local.

Usage (a workflow script)::

    with dask_client(config) as client:   # config: the workflow config (or its `dask:` part)
        result = lazy_thing.compute()     # runs on whatever the `dask:` section chose

The top-level ``dask:`` config section chooses the cluster: ``local`` (a LocalCluster of
thread workers in this process), ``slurm`` (a dask-jobqueue SLURMCluster, each worker one SLURM
job) or ``synchronous`` (no cluster, for tiny data and debugging), and sizes its workers.
Account and partition default to the SLURM profile's ``$M2M_SLURM_ACCOUNT`` and
``$M2M_SLURM_PARTITION`` (one place for the jobs and the workers).
``local`` thread workers get no memory limit of their own: they share the job's process, whose
memory (the script's included) a limit would count, pausing them. The keys, defaults and
descriptions live in schemas/dask.schema.yaml (config/README.md's table is generated from it:
``python -m mice2machines.settings table dask``).
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


def in_process(cfg: Mapping | None, input_mb: float | None) -> bool:
    """Whether inputs of ``input_mb`` MB are small enough (under ``in_process_mb``) to be
    computed in the job's process, without a cluster; unknown sizes (None) are not."""
    return input_mb is not None and input_mb < float(dask_settings(cfg)["in_process_mb"])


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
def dask_client(cfg: Mapping | None = None, input_mb: float | None = None) -> Iterator[Any]:
    """Yield a distributed Client on the cluster the ``dask:`` settings ask for.

    Yields None for ``cluster: synchronous``, and for inputs of fewer than ``in_process_mb``
    MB (`in_process`): dask's synchronous scheduler is active inside the block. Workers,
    SLURM jobs and the scheduler are shut down on exit.
    """
    import dask

    s = dask_settings(cfg)
    if s["cluster"] == "synchronous" or in_process(s, input_mb):
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
        # re-imports __main__, which a snakemake `script:` (no main guard) cannot survive. No
        # worker memory limit: it would measure this whole process and pause the workers
        # (idle, never failing) once the script itself holds most of it; the job's own
        # memory (the rule's mem_mb) bounds them instead.
        cluster = LocalCluster(
            n_workers=n,
            threads_per_worker=int(s["cores"]),
            processes=False,
            memory_limit=0,
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


def slurm_states_first_word() -> bool:
    """Make the SLURM executor plugin read sacct states such as ``CANCELLED by 0`` as their first
    word (``CANCELLED``). Plugin 2.8.0 compares the whole string, so a job cancelled with
    ``scancel`` looks like a running job forever and the run hangs. Called by the Snakefile;
    returns whether the plugin was there to fix (idempotent)."""
    try:
        import snakemake_executor_plugin_slurm as plugin
    except ImportError:
        return False
    query = getattr(plugin, "query_job_status", None)
    if query is None or getattr(query, "first_word", False):
        return query is not None

    async def query_job_status(command, logger):
        states, duration = await query(command, logger)
        if states:
            states = {job: (state.split() or [state])[0] for job, state in states.items()}
        return states, duration

    query_job_status.first_word = True
    plugin.query_job_status = query_job_status
    return True
