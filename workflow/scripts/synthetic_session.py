"""synthetic_session: one simulated experiment (NWB file and planted-cell table); a layer drive
builds its zoo model from the models table and weights cache the config names."""

import json
import os
from pathlib import Path

import numpy as np

from mice2machines import synthetic
from mice2machines.io import script_logger

log = script_logger(snakemake.log[0])
eid = int(snakemake.wildcards.eid)
cfg = json.loads(snakemake.params.cfg)
drive_cfg = cfg["drive"]
drive = None
if drive_cfg.get("kind", "rf") == "layer":
    log.info("layer drive: %s / %s", drive_cfg["model"], drive_cfg["layer"])
    models = snakemake.config["models"]
    table = models["table"]
    if not os.path.exists(table):
        table = Path(snakemake.scriptdir).parents[1] / table
    drive = synthetic.model_layer_drive(
        np.load(snakemake.input.template),
        drive_cfg["model"],
        drive_cfg["layer"],
        table,
        models["weights_dir"],
        seed=cfg["drive_model"]["seed"],
        neurn=drive_cfg.get("neurn"),
    )
    log.info("layer drive: %d units x %d views", drive.shape[2], drive.shape[0])
log.info("simulating experiment %d (drive: %s)", eid, drive_cfg.get("kind", "rf"))
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
