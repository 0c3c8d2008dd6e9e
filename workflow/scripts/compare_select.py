"""compare_select: the paper's neuron selection (UMAP, K-means, nearest to each centre)."""
# ruff: noqa: F821  (`snakemake` is injected by Snakemake)

import json

from mice2machines.compare import selection
from mice2machines.io import open_zarr, script_logger

log = script_logger(snakemake.log[0])
cfg = json.loads(snakemake.params.cfg)
table = selection.selection_table(open_zarr(snakemake.input.neural), cfg)
table.to_csv(snakemake.output.table, sep="\t", index=False)
log.info(
    "selected %d of %d cells: %s",
    int(table.selected.sum()),
    len(table),
    table[table.selected].groupby("ei_class").size().to_dict(),
)
