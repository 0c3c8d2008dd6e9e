"""Cross-validated ridge predictivity per neuron, from the layer's Gram matrix.

Kernel ridge over all the layer's units; the penalty grid is relative to the data
(alpha x trace(K_train) / n_train), so scores do not depend on the activations' scale; each
neuron's alpha is chosen on the training images of each fold by leave-one-out; held-out
images are scored per fold (compare.cv_score). The null refits every permutation of the
image labels exactly (alpha re-chosen), in batched products.
"""

from __future__ import annotations

import numpy as np

from ..registry import Metric, Variable, register_metric
from ..ridge import ridge_fold_scores, ridge_pooled_scores

ORDER = 3


class RidgeScorer:
    """Needs nothing but the layer's Gram matrix (of its projected units where
    compare.random_projection is on)."""

    def __init__(self, ctx):
        self.ctx = ctx

    def update(self, block: np.ndarray) -> None:
        pass

    def result(self, layer) -> dict:
        ctx = self.ctx
        perms = ctx.perms.get("n_perm")
        how = ctx.cfg["cv_score"]
        args = (layer.mapping, ctx.Y, ctx.cfg["ridge_alphas"], ctx.folds)
        kw = {"perms": perms if perms is not None and len(perms) else None, "device": ctx.device}
        if how == "pooled":
            res = ridge_pooled_scores(*args, **kw)
        else:
            res = ridge_fold_scores(*args, fisher=how == "fold_mean_z", **kw)
        return {"ridge_r": res["score"], "prediction": res["prediction"].T, "null": res.get("null")}


register_metric(
    Metric(
        name="ridge",
        kind="cell",
        higher_is_better=True,
        description="cross-validated ridge predictivity: held-out Pearson r per neuron, "
        "per fold (compare.cv_score), penalty relative to the data",
        layer=RidgeScorer,
        cell_var="ridge_r",
        variables={"ridge_r": Variable()},
        ceiling="reliability",
        cell_bootstrap="images",
    )
)
