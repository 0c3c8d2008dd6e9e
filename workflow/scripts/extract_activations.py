"""Rule extract_activations: one zoo model's layer activations for the stimuli, to zarr."""

import json

import torch

from mice2machines.io import script_logger
from mice2machines.models import zoo
from mice2machines.models.extract import ExtractSettings, extract_model
from mice2machines.workflow_params import run_settings

log = script_logger(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
cfg = json.loads(snakemake.params.cfg)
models = snakemake.config["models"]
extract_model(
    zoo.ModelSpec(**cfg["spec"]),
    snakemake.input.stimuli,
    snakemake.output.store,
    ExtractSettings.from_config({**cfg, **run_settings("models", snakemake.config)}),
    weights_dir=models["weights_dir"],
    layer_types=cfg["layer_types"],
    seed=cfg["seed"],
    logger=log,
)
