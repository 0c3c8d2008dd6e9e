"""Local rule fetch_weights: make one zoo model's weights available offline, write a manifest."""

import json

from mice2machines.io import script_logger
from mice2machines.models import zoo

log = script_logger(snakemake.log[0])
cfg = json.loads(snakemake.params.cfg)
spec = zoo.ModelSpec(**cfg["spec"])
record = zoo.fetch_weights(spec, cfg["weights_dir"])
log.info("%s: %s weights %s -> %s", spec.name, record["kind"], spec.weights, record["path"])
with open(snakemake.output[0], "w") as f:
    json.dump(record, f, indent=1)
