"""dg_train: one (arch, variant, source, seed) job; resumes from its last epoch checkpoint."""
# ruff: noqa: F821  (`snakemake` is injected by Snakemake)

from pathlib import Path

from mice2machines.dg import training
from mice2machines.io import script_logger

log = script_logger(snakemake.log[0])
cfg = training.TrainConfig.from_dict({**snakemake.params.cfg, "threads": snakemake.threads})
targets = dict(zip(snakemake.params.targets, snakemake.input.targets, strict=True))
training.run_job(
    cfg,
    snakemake.input.source,
    targets,
    Path(snakemake.output.metrics).parent,
    log=log,
    keep_state=snakemake.params.keep_state,
)
