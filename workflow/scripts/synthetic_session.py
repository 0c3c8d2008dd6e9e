from mice2machines import synthetic
from mice2machines.io import script_logger

log = script_logger(snakemake.log[0])
eid = int(snakemake.wildcards.eid)
log.info("simulating experiment %d", eid)
synthetic.write_session(
    snakemake.input.template,
    snakemake.input.manifest,
    eid,
    snakemake.output.nwb,
    snakemake.output.cells,
    snakemake.params.cfg,
)
log.info("wrote %s", snakemake.output.nwb)
