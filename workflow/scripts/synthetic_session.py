import numpy as np

from mice2machines import synthetic
from mice2machines.io import script_logger

log = script_logger(snakemake.log[0])
eid = int(snakemake.wildcards.eid)
cfg = snakemake.params.cfg
drive_cfg = cfg.get("drive") or {"kind": "rf"}
drive = None
if drive_cfg.get("kind", "rf") == "layer":
    log.info("layer drive: %s / %s", drive_cfg["model"], drive_cfg["layer"])
    drive = synthetic.model_layer_drive(
        np.load(snakemake.input.template),
        drive_cfg["model"],
        drive_cfg["layer"],
        snakemake.params.drive["models_table"],
        snakemake.params.drive["weights_dir"],
        seed=snakemake.params.drive["seed"],
        neurn=drive_cfg.get("neurn"),
    )
    log.info("layer drive: %d units x %d views", drive.shape[2], drive.shape[0])
log.info("simulating experiment %d", eid)
synthetic.write_session(
    snakemake.input.template,
    snakemake.input.manifest,
    eid,
    snakemake.output.nwb,
    snakemake.output.cells,
    cfg,
    drive=drive,
)
log.info("wrote %s", snakemake.output.nwb)
