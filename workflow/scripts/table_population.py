"""table_population: a response table to the population store (filters, reliability)."""
# ruff: noqa: F821  (`snakemake` is injected by Snakemake)

import json

from mice2machines.io import script_logger
from mice2machines.neural import table
from mice2machines.workflow_params import run_settings

log = script_logger(snakemake.log[0])
cfg = {**json.loads(snakemake.params.cfg), **run_settings("neural", snakemake.config)}
summary = table.write_population(snakemake.input.table, snakemake.output.store, cfg)
log.info("done: %s", summary)
