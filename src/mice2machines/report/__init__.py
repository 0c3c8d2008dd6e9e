"""The report a scientist reads: the figure registry and the self-contained HTML page.

`write_report` draws the figures of the report stage (those made from other stages'
tables: the architecture matrix, the DG accuracy plot), adds the DG table in DomainBed's
form and writes ``report.html``; the comparison's figures are drawn by its own rule.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from .registry import FigureSpec, Inputs, draw, figure_files, registered

__all__ = ["FigureSpec", "Inputs", "draw", "figure_files", "registered", "write_report"]


def write_report(
    specs: Sequence[FigureSpec],
    inputs: Inputs,
    results: str | Path,
    out: str | Path,
    captions: str | Path,
) -> Path:
    """Draw the report stage's figures, then write the page to ``out`` (atomically)."""
    from ..dg.results import domainbed_table
    from ..io import atomic_path
    from .html import render, table_html

    draw(specs, inputs, results, "report")
    tables = {}
    if "dg_metrics" in inputs.paths and inputs.paths["dg_metrics"]:
        t = domainbed_table(inputs.dg)
        text = (Path(captions) / "dg_table.rst").read_text()
        from .html import rst_html

        tables["Domain generalization"] = table_html(t, rst_html(text))
    page = render(specs, results, captions, tables=tables)
    with atomic_path(out) as tmp:
        Path(tmp).write_text(page)
    return Path(out)


def paths_from_results(results: str | Path, activations: str | Path | None = None) -> Mapping:
    """The figure inputs of a finished run under ``results`` (its default layout)."""
    r = Path(results)
    return {
        "scores": r / "compare" / "scores.zarr",
        "csv": r / "compare" / "scores.csv",
        "neural": r / "compare" / "neural.zarr",
        "selected": r / "compare" / "selected_neurons.tsv",
        "activations": Path(activations) if activations else r / "activations",
        "archsim": r / "archsim" / "similarity.tsv",
        "dg_metrics": sorted((r / "dg" / "runs").glob("**/metrics.json")),
    }
