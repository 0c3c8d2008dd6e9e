"""compare_figures: the comparison's figures of the figure registry (PNG + SVG)."""
# ruff: noqa: F821  (`snakemake` is injected by Snakemake)

import json
from pathlib import Path

from mice2machines.compare.registry import load_plugins
from mice2machines.io import open_zarr, script_logger
from mice2machines.report import Inputs, draw, registered

log = script_logger(snakemake.log[0])
cfg = json.loads(snakemake.params.cfg)
load_plugins(cfg["plugins"])
activations = Path(snakemake.input.activations[0]).parent if snakemake.input.activations else None
inputs = Inputs(
    {
        "scores": snakemake.input.store,
        "csv": snakemake.input.csv,
        "neural": snakemake.input.neural,
        "selected": snakemake.input.selected,
        "activations": activations,
    },
    cfg,
)
note = open_zarr(snakemake.input.neural, chunks=None).attrs.get("ceiling_note")
if note:
    log.warning("figures: %s", note)
results = Path(snakemake.output.figures[0]).parents[2]  # results/compare/figures/x.png
specs = registered(cfg["metrics"])
done = draw(specs, inputs, results, "compare", note=note, workers=snakemake.threads)
log.info("wrote %d figures (PNG + SVG)", len(done))
