"""stimuli: the natural-scenes template of the first experiment, to zarr (no settings)."""

from mice2machines.io import script_logger
from mice2machines.neural import dandi, nwb, population

log = script_logger(snakemake.log[0])
inputs = dict(snakemake.input.items())
if "manifest" in inputs:
    first = dandi.read_manifest(inputs["manifest"])[0]["experiment_id"]
    session = dandi.open_session(inputs["manifest"], first, inputs.get("nwb"), default_depth=-1)
else:
    session = nwb.read_session(inputs["nwb"])
population.write_stimuli(session, snakemake.output.store)
log.info("wrote %s", snakemake.output.store)
