"""dg_results: metrics JSONs -> DG table (CSV + markdown), plot and model-zoo manifest."""
# ruff: noqa: F821  (`snakemake` is injected by Snakemake)

from mice2machines.dg import results as dg_results
from mice2machines.io import script_logger

log = script_logger(snakemake.log[0])
summary = dg_results.write_results(
    snakemake.input.metrics,
    snakemake.output.csv,
    snakemake.output.md,
    snakemake.output.png,
    snakemake.output.manifest,
    confidence=snakemake.params.confidence,
)
log.info("%d jobs -> %d table rows", len(snakemake.input.metrics), len(summary))
