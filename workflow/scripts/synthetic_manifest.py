"""synthetic_manifest: the synthetic experiment manifest."""

import json

from mice2machines import synthetic
from mice2machines.io import script_logger

log = script_logger(snakemake.log[0])
table = synthetic.write_manifest(snakemake.output.manifest, json.loads(snakemake.params.cfg))
log.info("%d synthetic experiments", len(table))
