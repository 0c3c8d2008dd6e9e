"""compare_figures: heatmaps, best layer per area, E vs I, the paper's RMSE distributions."""
# ruff: noqa: F821  (`snakemake` is injected by Snakemake)

import json

import pandas as pd

from mice2machines.compare import aggregate, figures
from mice2machines.compare.registry import load_plugins
from mice2machines.io import open_zarr, script_logger

log = script_logger(snakemake.log[0])
cfg = json.loads(snakemake.params.cfg)
load_plugins(cfg["plugins"])
ds = aggregate.open_store(snakemake.input.store).load()
df = pd.read_csv(snakemake.input.csv)
outputs = {
    f"heatmap:{m}": p for m, p in zip(cfg["metrics"], snakemake.output.heatmaps, strict=True)
}
outputs.update(
    {
        "best_layer": snakemake.output.best_layer,
        "ei": snakemake.output.ei,
        "rmse_area": snakemake.output.rmse_area,
        "rmse_cre_line": snakemake.output.rmse_cre_line,
    }
)
note = open_zarr(snakemake.input.neural).attrs.get("ceiling_note")
if note:
    log.warning("figures: %s", note)
figures.save_all(ds, df, outputs, note=note)
log.info("wrote %d figures", len(outputs))
