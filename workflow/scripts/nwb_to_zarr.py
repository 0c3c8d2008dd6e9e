"""nwb_to_zarr: one NWB session to its experiment store (trial responses, blanks, snippets)."""

import json

from mice2machines.io import script_logger
from mice2machines.neural import convert as neural
from mice2machines.neural import dandi, nwb
from mice2machines.workflow_params import run_settings

log = script_logger(snakemake.log[0])
cfg = {**json.loads(snakemake.params.cfg), **run_settings("neural", snakemake.config)}
inputs = dict(snakemake.input.items())
if "manifest" in inputs:
    eid = int(snakemake.wildcards.eid)
    session = dandi.open_session(
        inputs["manifest"], eid, inputs.get("nwb"), cfg.pop("unknown_depth")
    )
else:
    session = nwb.read_session(inputs["nwb"])
log.info(
    "%s: experiment %d, %s %s, %d cells, %d frames, %d presentations",
    session.source_name,
    session.experiment_id,
    session.area,
    session.cre_line,
    session.n_cells,
    session.n_frames,
    len(session.stimulus),
)
summary = neural.convert_session(session, snakemake.output.store, cfg)
log.info("done: %s", summary)
