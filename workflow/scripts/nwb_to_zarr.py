from mice2machines.io import script_logger
from mice2machines.neural import convert as neural
from mice2machines.neural import nwb

log = script_logger(snakemake.log[0])
session = nwb.read_session(snakemake.input.nwb)
log.info(
    "%s: experiment %d, %s %s, %d cells, %d frames, %d presentations",
    snakemake.input.nwb,
    session.experiment_id,
    session.area,
    session.cre_line,
    session.n_cells,
    session.n_frames,
    len(session.stimulus),
)
summary = neural.convert_session(session, snakemake.output.store, snakemake.params.cfg)
log.info("done: %s", summary)
