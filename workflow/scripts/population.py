from mice2machines import neural
from mice2machines.io import script_logger

log = script_logger(snakemake.log[0])
log.info("assembling %d experiment stores", len(snakemake.input.stores))
summary = neural.write_population(
    list(snakemake.input.stores), snakemake.output.store, snakemake.params.cfg
)
log.info("done: %s", summary)
