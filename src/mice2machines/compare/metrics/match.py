"""One-to-one matching: each neuron's best unit on the training images, scored held out.

The null is the same max over the same units: the permuted responses ride along as extra
neurons in the same pass over the layer, so wide layers gain nothing from being searched.
"""

from __future__ import annotations

import numpy as np

from ...devices import to_numpy
from ..inference import permuted_columns, unstack_null
from ..matching import MatchAccumulator
from ..registry import Metric, Variable, register_metric

ORDER = 4


class MatchScorer:
    """Streams the layer's units through a MatchAccumulator; sub-blocks keep the
    (cells x units) product near 1 GiB."""

    def __init__(self, ctx):
        self.ctx = ctx
        perms = ctx.perms.get("n_perm_max")
        self.n_perm = 0 if perms is None else len(perms)
        Y = ctx.Y
        if self.n_perm:
            self.Yp = permuted_columns(Y, perms)
            Y = np.concatenate([Y, self.Yp], axis=1)
        self.acc = MatchAccumulator(Y, ctx.folds, device=ctx.device, dtype=ctx.dtype)
        self.step = max(1024, (1 << 28) // max(Y.shape[1], 1))

    def update(self, block: np.ndarray) -> None:
        flat = block.reshape(self.ctx.n_images, -1)
        for lo in range(0, flat.shape[1], self.step):
            self.acc.update(flat[:, lo : lo + self.step])

    def result(self, layer) -> dict:
        """Predictions and their per-fold scores stay on the accumulator's device; only the
        (folds, columns) correlations and the observed cells' predictions come back."""
        ctx, c, acc = self.ctx, self.ctx.n_cells, self.acc
        pred, Y = acc.predictions(), acc.responses
        out = {
            "match_r": ctx.fold_scores(pred[:, :c], Y[:, :c]),
            "match_unit": to_numpy(acc.best_unit)[:, :c],
            "prediction": to_numpy(pred[:, :c]).T,
            "null": None,
        }
        if self.n_perm:
            null = ctx.fold_scores(pred[:, c:], Y[:, c:])
            out["null"] = unstack_null(null, self.n_perm, c)
        return out


register_metric(
    Metric(
        name="match",
        kind="cell",
        higher_is_better=True,
        description="one-to-one matching: best unit on train images, held-out r per neuron "
        "(per fold, compare.cv_score)",
        layer=MatchScorer,
        cell_var="match_r",
        variables={
            "match_r": Variable(),
            "match_unit": Variable(("fold", "cell"), -1, "int64"),
        },
        ceiling="reliability",
        cell_bootstrap="images",
        null_perms="n_perm_max",
    )
)
