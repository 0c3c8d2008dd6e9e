"""report: the report stage's figures and results_dir/report.html."""
# ruff: noqa: F821  (`snakemake` is injected by Snakemake)

from pathlib import Path

from mice2machines.io import script_logger
from mice2machines.report import Inputs, registered, write_report

log = script_logger(snakemake.log[0])
inputs = Inputs(
    {
        "csv": snakemake.input.csv,
        "archsim": snakemake.input.archsim,
        "dg_metrics": list(snakemake.input.dg_metrics),
    }
)
specs = registered(inputs.metrics, dg=bool(snakemake.input.dg_metrics))
out = write_report(
    specs,
    inputs,
    Path(snakemake.output.html).parent,
    snakemake.output.html,
    Path(snakemake.input.captions).parent,
)
log.info("%d figures -> %s", len(specs), out)
