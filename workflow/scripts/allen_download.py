from mice2machines.allen import download
from mice2machines.io import script_logger

log = script_logger(snakemake.log[0])
url = snakemake.params.url.format(experiment_id=int(snakemake.wildcards.eid))
download(url, snakemake.output.nwb, log=log.info)
