"""Local rule fetch_weights: make one zoo model's weights available offline, write a manifest.
A failure (no network, a wrong name, a corrupt file) is one log line naming the model and
its URL or file, and exit status 1."""

import json
import sys

from mice2machines.download import DownloadError
from mice2machines.io import script_logger
from mice2machines.models import zoo
from mice2machines.models.weights import WeightsError

log = script_logger(snakemake.log[0])
cfg = json.loads(snakemake.params.cfg)
spec = zoo.ModelSpec(**cfg["spec"])
try:
    record = zoo.fetch_weights(spec, cfg["weights_dir"])
except (WeightsError, DownloadError, zoo.ZooError) as err:
    log.error("fetch_weights %s: %s", spec.name, err)
    sys.exit(1)
log.info("%s: %s weights %s -> %s", spec.name, record["kind"], spec.weights, record["path"])
with open(snakemake.output[0], "w") as f:
    json.dump(record, f, indent=1)
