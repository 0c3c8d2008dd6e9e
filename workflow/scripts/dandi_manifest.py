"""dandi_manifest: the dandiset's processed natural-scenes sessions, filtered, to the manifest."""

import json

from mice2machines.io import script_logger
from mice2machines.neural import dandi

log = script_logger(snakemake.log[0])
cfg = json.loads(snakemake.params.cfg)
rows = dandi.discover(cfg)
if not rows:
    raise dandi.DandiError(f"dandiset {cfg['dandiset']}: no session matches the dandi section")
dandi.write_manifest(rows, snakemake.output.manifest)
log.info(
    "%s: %d sessions of dandiset %s@%s",
    snakemake.output.manifest,
    len(rows),
    cfg["dandiset"],
    rows[0]["version"],
)
