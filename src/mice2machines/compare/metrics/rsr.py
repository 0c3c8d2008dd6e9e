"""RSR: k-fold non-negative least squares of the neural RDM on all of a model's layer RDMs,
scored on held-out image pairs (``compare.rsr``); a per-model metric."""

from __future__ import annotations

from ..registry import Metric, register_metric
from ..rsr import N_FOLDS, rsr_bootstrap, rsr_null, rsr_score

ORDER = 6

register_metric(
    Metric(
        name="rsr",
        kind="representation",
        higher_is_better=True,
        description=f"RSR: non-negative mixture of all layers' 1 - Pearson RDMs fitted to the "
        f"neural RDM, held-out r over {N_FOLDS} image folds (pairs within a fold); one score "
        "per model, repeated over its layers",
        score=rsr_score,
        bootstrap=rsr_bootstrap,
        null=rsr_null,
        default=False,
        per_model=True,
    )
)
