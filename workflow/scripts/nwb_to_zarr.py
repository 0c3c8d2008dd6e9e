"""nwb_to_zarr: one NWB session to its experiment store (trial responses, blanks, snippets)."""

import json

from mice2machines import preflight
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
# the staging store and, where cells are dropped, its copy: twice the skeleton at most
skeleton, _ = neural.session_skeleton(session, neural.settings(cfg))
preflight.free_disk(snakemake.output.store, 2 * skeleton.nbytes, "the experiment store")
summary = neural.convert_session(session, snakemake.output.store, cfg)
log.info("done: %s", summary)
