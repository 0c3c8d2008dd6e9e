"""dg_train: one (arch, variant, source, seed) job; resumes from its last epoch checkpoint."""
# ruff: noqa: F821  (`snakemake` is injected by Snakemake)

import json
from pathlib import Path

from mice2machines.dg import jobs, training
from mice2machines.io import script_logger

log = script_logger(snakemake.log[0])
dg = snakemake.config["dg"]
w = snakemake.wildcards
run = jobs.run_settings(jobs.job_settings(dg, w.arch, w.variant, w.source, int(w.seed)))
settings = {**json.loads(snakemake.params.cfg), **run, "threads": snakemake.threads}
cfg = training.TrainConfig.from_dict(settings)
targets = dict(zip(snakemake.params.targets, snakemake.input.targets, strict=True))
training.run_job(
    cfg,
    snakemake.input.source,
    targets,
    Path(snakemake.output.metrics).parent,
    log=log,
    keep_state=dg["keep_state"],
)
