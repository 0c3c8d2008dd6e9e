from mice2machines.allen import download
from mice2machines.io import script_logger

log = script_logger(snakemake.log[0])
download(snakemake.params.url, snakemake.output.nwb, log=log.info)
