"""One-to-one matching: each neuron's best unit on the training images, scored held out."""

from __future__ import annotations

import numpy as np

from ...neural.reliability import pearson_rows
from ..matching import MatchAccumulator
from ..registry import Metric, Variable, register_metric

ORDER = 4


class MatchScorer:
    """Streams the layer's units through a MatchAccumulator; sub-blocks keep the
    (cells x units) product near 1 GiB."""

    def __init__(self, ctx):
        self.ctx = ctx
        self.acc = MatchAccumulator(ctx.Y, ctx.folds, device=ctx.device, dtype=ctx.dtype)
        self.step = max(1024, (1 << 28) // max(ctx.n_cells, 1))

    def update(self, block: np.ndarray) -> None:
        flat = block.reshape(self.ctx.n_images, -1)
        for lo in range(0, flat.shape[1], self.step):
            self.acc.update(flat[:, lo : lo + self.step])

    def result(self, layer) -> dict:
        res = self.acc.result()
        pred = res["prediction"].T
        return {
            "match_r": pearson_rows(pred, self.ctx.Y.T),
            "match_unit": res["best_unit"],
            "prediction": pred,
        }


register_metric(
    Metric(
        name="match",
        kind="cell",
        higher_is_better=True,
        description="one-to-one matching: best unit on train images, held-out r per neuron",
        layer=MatchScorer,
        cell_var="match_r",
        variables={
            "match_r": Variable(),
            "match_unit": Variable(("fold", "cell"), -1, "int64"),
        },
        ceiling="reliability",
        cell_bootstrap="images",
    )
)
