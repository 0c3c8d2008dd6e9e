"""compare_model: every metric of one model's layers against every neural group."""
# ruff: noqa: F821  (`snakemake` is injected by Snakemake)

import json

import pandas as pd

from mice2machines import preflight
from mice2machines.compare import job, prepare
from mice2machines.io import open_zarr, provenance, script_logger, write_zarr_atomic
from mice2machines.workflow_params import run_settings

log = script_logger(snakemake.log[0])
cfg = {**json.loads(snakemake.params.cfg), **run_settings("compare", snakemake.config)}
table = pd.read_csv(snakemake.input.selected, sep="\t")
per_cell = (
    int(table["selected"].astype(bool).sum()) if cfg["cell_metrics_on"] == "selected" else None
)
preflight.check_compare_model(
    snakemake.input.neural,
    snakemake.input.activations,
    cfg,
    getattr(snakemake.resources, "mem_mb", None),
    per_cell,
)
neural = open_zarr(snakemake.input.neural, chunks=None).load()
selected = prepare.read_selected(snakemake.input.selected, neural)
ds = job.compare_model(
    snakemake.input.activations, neural, selected, cfg, model=snakemake.wildcards.model
)
ds.attrs["provenance"] = provenance(config=cfg, inputs=prepare.input_hashes(snakemake.input))
write_zarr_atomic(ds, snakemake.output.store)
log.info("wrote %s", snakemake.output.store)
