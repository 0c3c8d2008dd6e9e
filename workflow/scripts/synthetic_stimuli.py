"""synthetic_stimuli: the synthetic natural-scenes template."""

import json

from mice2machines import synthetic
from mice2machines.io import script_logger

log = script_logger(snakemake.log[0])
images = synthetic.write_template(snakemake.output[0], json.loads(snakemake.params.cfg))
log.info("wrote %d synthetic natural scenes of %dx%d", *images.shape)
