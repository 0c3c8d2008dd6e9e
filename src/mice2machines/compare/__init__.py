"""Model-versus-brain comparison: neural preparation, per-model job, aggregation, figures.

Stages (one Snakemake rule each, see workflow/rules/compare.smk):

1. ``prepare.prepare_neural``: trial means, neural groups, ceilings, neuron maps.
2. ``selection.select_neurons`` (package module): the paper's neuron selection.
3. ``job.compare_model``: stream every layer of one model's activation store once and compute
   every metric against every neural group; one labelled store per model.
4. ``aggregate.aggregate``: all models into one store (dask) and a tidy long CSV.
5. ``figures``: heatmaps, best layer per area, E vs I, the paper's RMSE distributions.
"""

from __future__ import annotations


def settings(cfg: dict | None) -> dict:
    """The `compare` config section, validated, with every default filled in (defaults and
    their documentation: schemas/compare.schema.yaml)."""
    from ..settings import section

    return section("compare", cfg)
