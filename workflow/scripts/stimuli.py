"""stimuli: the natural-scenes template of the first experiment, to zarr (no settings)."""

from mice2machines.io import script_logger
from mice2machines.neural import nwb, population

log = script_logger(snakemake.log[0])
population.write_stimuli(nwb.read_session(snakemake.input.nwb), snakemake.output.store)
log.info("wrote %s", snakemake.output.store)
