"""Rule extract_activations: one zoo model's layer activations for the stimuli, to zarr."""

import torch

from mice2machines.io import script_logger
from mice2machines.models import zoo
from mice2machines.models.extract import ExtractSettings, extract_model

log = script_logger(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
p = snakemake.params
extract_model(
    zoo.ModelSpec(**p.spec),
    snakemake.input.stimuli,
    snakemake.output.store,
    ExtractSettings.from_config(p.settings),
    weights_dir=p.weights_dir,
    layer_types=p.layer_types,
    seed=p.seed,
    logger=log,
)
