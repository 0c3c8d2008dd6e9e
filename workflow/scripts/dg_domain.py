"""dg_domain: build one digit domain (offline from wheels, or downloaded) into a zarr store."""
# ruff: noqa: F821  (`snakemake` is injected by Snakemake)

import json

from mice2machines.dg import domains
from mice2machines.io import script_logger

log = script_logger(snakemake.log[0])
name = snakemake.wildcards.domain
dg = snakemake.config["dg"]
if domains.DOMAINS[name].online:
    params = {"mirrors": dg["mirrors"].get(name), "log": log.info}
    download_dir = dg["download_dir"]
else:
    params = json.loads(snakemake.params.settings)
    download_dir = None
params = {k: v for k, v in params.items() if v is not None}
log.info("building domain %s with %s", name, {k: v for k, v in params.items() if k != "log"})
ds = domains.build_domain(name, download_dir, **params)
domains.write_domain(ds, snakemake.output[0])
info = domains.describe(ds)
log.info(
    "%s: %d samples (%d test), per class %s", name, info["n"], info["n_test"], info["per_class"]
)
