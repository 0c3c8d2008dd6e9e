"""population: every experiment store into one population store (filters, reliability)."""

import json

from mice2machines import preflight
from mice2machines.cluster import dask_client
from mice2machines.io import script_logger
from mice2machines.neural import population
from mice2machines.workflow_params import run_settings

log = script_logger(snakemake.log[0])
cfg = {**json.loads(snakemake.params.cfg), **run_settings("neural", snakemake.config)}
log.info("assembling %d experiment stores", len(snakemake.input.stores))
need = preflight.stores_bytes(snakemake.input.stores, population.READS)
log.info("preflight: %s", preflight.free_disk(snakemake.output.store, need, "the population"))
with dask_client(snakemake.config["dask"]) as client:
    log.info("dask: %s", "synchronous scheduler" if client is None else client)
    summary = population.write_population(list(snakemake.input.stores), snakemake.output.store, cfg)
log.info("done: %s", summary)
