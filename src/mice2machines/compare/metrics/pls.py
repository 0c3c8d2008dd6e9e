"""Cross-validated PLS regression per neuron, from the layer's Gram matrix (Brain-Score's
default mapping: 25 components, no scaling, every target neuron fitted jointly).

Fitted on the training images of each fold over all the job's cells at once; held-out
images scored per fold (compare.cv_score). The null refits the whole PLS for every
permutation of the image labels (the n_perm_max permutations: each one is a full fit).
"""

from __future__ import annotations

from ..pls import pls_fold_scores
from ..registry import Metric, Variable, register_metric

ORDER = 3.5


class PLSScorer:
    """Needs nothing but the layer's Gram matrix (of its projected units where
    compare.random_projection is on)."""

    def __init__(self, ctx):
        self.ctx = ctx

    def update(self, block) -> None:
        pass

    def result(self, layer) -> dict:
        ctx = self.ctx
        perms = ctx.perms.get("n_perm_max")
        how = ctx.cfg["cv_score"]
        res = pls_fold_scores(
            layer.mapping,
            ctx.Y,
            ctx.cfg["pls_components"],
            ctx.folds,
            perms=perms if perms is not None and len(perms) else None,
            fisher=how == "fold_mean_z",
            pooled=how == "pooled",
            device=ctx.device,
        )
        return {"pls_r": res["score"], "prediction": res["prediction"].T, "null": res.get("null")}


register_metric(
    Metric(
        name="pls",
        kind="cell",
        higher_is_better=True,
        description="cross-validated PLS regression (compare.pls_components, all neurons "
        "jointly, no scaling): held-out Pearson r per neuron, per fold (compare.cv_score)",
        layer=PLSScorer,
        cell_var="pls_r",
        variables={"pls_r": Variable()},
        ceiling="reliability",
        cell_bootstrap="images",
        null_perms="n_perm_max",
        default=False,
    )
)
