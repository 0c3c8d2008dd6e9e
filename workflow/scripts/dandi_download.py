"""dandi_download: one session's asset, checked (size, sha256 or dandi-etag), to the cache."""

from mice2machines.io import script_logger
from mice2machines.neural import dandi

log = script_logger(snakemake.log[0])
row = dandi.manifest_row(snakemake.input.manifest, int(snakemake.wildcards.eid))
dandi.download_asset(row, snakemake.output.nwb, log=log.info)
