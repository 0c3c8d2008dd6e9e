"""compare_prepare: trial means, neural groups, split-half ceilings, neuron maps."""
# ruff: noqa: F821  (`snakemake` is injected by Snakemake)

import json

from mice2machines.compare import prepare
from mice2machines.io import open_zarr, provenance, script_logger, write_zarr_atomic
from mice2machines.workflow_params import run_settings

log = script_logger(snakemake.log[0])
cfg = json.loads(snakemake.params.cfg)
run = run_settings("compare", snakemake.config)  # cell_block: no rerun
ds = prepare.prepare_neural(
    open_zarr(snakemake.input.population), open_zarr(snakemake.input.stimuli), {**cfg, **run}
)
ds.attrs["provenance"] = provenance(config=cfg, inputs=prepare.input_hashes(snakemake.input))
write_zarr_atomic(ds, snakemake.output.store)
log.info(
    "wrote %s: %d cells, %d groups", snakemake.output.store, ds.sizes["cell"], ds.sizes["group"]
)
