from mice2machines.cluster import dask_client
from mice2machines.io import script_logger
from mice2machines.neural import population

log = script_logger(snakemake.log[0])
log.info("assembling %d experiment stores", len(snakemake.input.stores))
with dask_client(snakemake.params.dask) as client:
    log.info("dask: %s", "synchronous scheduler" if client is None else client)
    summary = population.write_population(
        list(snakemake.input.stores), snakemake.output.store, snakemake.params.cfg
    )
log.info("done: %s", summary)
