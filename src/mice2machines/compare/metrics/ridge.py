"""Cross-validated ridge predictivity: held-out Pearson r per neuron, from the layer's Gram."""

from __future__ import annotations

import numpy as np

from ...neural.reliability import pearson_rows
from ..registry import Metric, Variable, register_metric
from ..ridge import ridge_cv

ORDER = 3


class RidgeScorer:
    """Needs nothing but the layer's Gram matrix (kernel ridge over all its units)."""

    def __init__(self, ctx):
        self.ctx = ctx

    def update(self, block: np.ndarray) -> None:
        pass

    def result(self, layer) -> dict:
        Y = self.ctx.Y
        pred, _ = ridge_cv(layer.gram, Y, self.ctx.cfg["ridge_alphas"], self.ctx.folds)
        return {"ridge_r": pearson_rows(pred.T, Y.T), "prediction": pred.T}


register_metric(
    Metric(
        name="ridge",
        kind="cell",
        higher_is_better=True,
        description="cross-validated ridge predictivity: held-out Pearson r per neuron",
        layer=RidgeScorer,
        cell_var="ridge_r",
        variables={"ridge_r": Variable()},
        ceiling="reliability",
        cell_bootstrap="images",
    )
)
