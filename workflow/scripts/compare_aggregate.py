"""compare_aggregate: all model stores into one labelled store (dask) and tidy CSV tables."""
# ruff: noqa: F821  (`snakemake` is injected by Snakemake)

import json

from mice2machines.cluster import dask_client, in_process
from mice2machines.compare import aggregate
from mice2machines.compare.registry import load_plugins
from mice2machines.io import provenance, script_logger, write_zarr_atomic
from mice2machines.resources import input_mb

log = script_logger(snakemake.log[0])
cfg = json.loads(snakemake.params.cfg)
load_plugins(cfg["plugins"])
stores = list(snakemake.input.stores)
size = input_mb(stores)
small = in_process(snakemake.config["dask"], size)
with dask_client(snakemake.config["dask"], size) as client:
    log.info(
        "%d model stores, %.1f MB: %s",
        len(stores),
        size,
        "in memory, synchronous scheduler" if small else client or "synchronous scheduler",
    )
    ds = aggregate.aggregate(stores, cfg["models"], load=small)
    ds.attrs["provenance"] = provenance(config=cfg)
    write_zarr_atomic(ds, snakemake.output.store)
log.info("wrote %s", snakemake.output.store)
ds = aggregate.open_store(snakemake.output.store)
aggregate.tidy(ds).to_csv(snakemake.output.csv, index=False)
aggregate.bottom_up(ds).to_csv(snakemake.output.cells, index=False)
log.info("wrote %s and %s", snakemake.output.csv, snakemake.output.cells)
