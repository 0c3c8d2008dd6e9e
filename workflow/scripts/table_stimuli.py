"""table_stimuli: a response table's stimulus set to the stimulus store."""
# ruff: noqa: F821  (`snakemake` is injected by Snakemake)

import json

from mice2machines.io import script_logger
from mice2machines.neural import table

log = script_logger(snakemake.log[0])
table.write_stimuli(json.loads(snakemake.params.cfg), snakemake.output.store)
log.info("wrote %s", snakemake.output.store)
