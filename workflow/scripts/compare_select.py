"""compare_select: the paper's neuron selection (UMAP, K-means, nearest to each centre)."""
# ruff: noqa: F821  (`snakemake` is injected by Snakemake)

import json

from mice2machines.compare import selection
from mice2machines.io import open_zarr, script_logger

log = script_logger(snakemake.log[0])
cfg = json.loads(snakemake.params.cfg)
neural = open_zarr(snakemake.input.neural)
table = selection.select_neurons(
    neural["maps"].values,
    neural["ei_class"].values,
    neural["cell"].values,
    seed=int(cfg["seed"]),
    **cfg["selection"],
)
for c in ("area", "cre_line", "experiment_id"):
    table[c] = neural[c].values
table.to_csv(snakemake.output.table, sep="\t", index=False)
log.info(
    "selected %d of %d cells: %s",
    int(table.selected.sum()),
    len(table),
    table[table.selected].groupby("ei_class").size().to_dict(),
)
