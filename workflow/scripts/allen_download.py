from mice2machines.io import script_logger
from mice2machines.neural.allen import download

log = script_logger(snakemake.log[0])
download(snakemake.params.url, snakemake.output.nwb, log=log.info)
