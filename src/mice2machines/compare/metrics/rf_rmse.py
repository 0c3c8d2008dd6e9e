"""The paper's receptive-field comparison: RMSE between a neuron's map N = T'F_S and the map
of its best unit, on the feature maps as they are and after NeuRN (selected neurons only)."""

from __future__ import annotations

import warnings

import numpy as np

from .. import receptive_fields as rf
from ..registry import Metric, Variable, register_metric

ORDER = 5

#: quantiles of the activity (over images) of each neuron's best-matching unit (bottom-up)
QUANTILES = (0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0)


def _maps(ctx, activity: np.ndarray) -> np.ndarray:
    return rf.unit_maps(
        activity, ctx.stimulus_matrix, bool(ctx.cfg["map_center"]), ctx.cfg["map_normalize"]
    )


def _on_cells(ctx, values: np.ndarray, fill) -> np.ndarray:
    """Values of the selected cells spread over all the job's cells (fill elsewhere)."""
    out = np.full((ctx.n_cells,) + values.shape[1:], fill, dtype=np.asarray(values).dtype)
    out[ctx.selected] = values
    return out


class RFScorer:
    """Unit = a channel's spatially averaged activity (spatial layers) or a flat unit."""

    def __init__(self, ctx):
        self.ctx = ctx
        self.acc = rf.RMSEAccumulator(ctx.maps)

    def update(self, block: np.ndarray) -> None:
        if block.ndim == 4:
            T = rf.channel_activity(block)[0]
        else:
            T = block.reshape(self.ctx.n_images, -1)
        self.acc.update(_maps(self.ctx, T), activity=T)

    def result(self, layer) -> dict:
        res = self.acc.result()
        q = np.full((int(self.ctx.selected.sum()), len(QUANTILES)), np.nan)
        if "best_activity" in res:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                q = np.nanquantile(res["best_activity"], QUANTILES, axis=1).T
        return {
            "rf_rmse": _on_cells(self.ctx, res["best_rmse"], np.nan),
            "rf_mean_rmse": _on_cells(self.ctx, res["mean_rmse"], np.nan),
            "rf_unit": _on_cells(self.ctx, res["best_unit"], -1),
            "rf_unit_activity": _on_cells(self.ctx, q, np.nan),
        }


class RFNeuRNScorer:
    """NeuRN on the feature maps first (compare.neurn); flat or 1x1 layers have no space for
    it and score NaN. With max_over: image the per-image maximum spans all channels, so the
    chunks' scales are combined before the maps are made."""

    def __init__(self, ctx):
        self.ctx = ctx
        self.activity, self.scales = [], []

    def update(self, block: np.ndarray) -> None:
        if block.ndim == 4 and block.shape[2] * block.shape[3] > 1:
            t, s = rf.channel_activity(block, dict(self.ctx.cfg["neurn"]), device=self.ctx.device)
            self.activity.append(t)
            self.scales.append(s)

    def result(self, layer) -> dict:
        n = int(self.ctx.selected.sum())
        best, unit = np.full(n, np.nan), np.full(n, -1, dtype=np.int64)
        if self.activity:
            T = np.concatenate(self.activity, axis=1)
            if self.scales[0] is not None:
                scale = np.max(np.stack(self.scales), axis=0)
                T = T / np.where(scale > 0, scale, 1.0)[:, None]
            acc = rf.RMSEAccumulator(self.ctx.maps)
            acc.update(_maps(self.ctx, T))
            res = acc.result()
            best, unit = res["best_rmse"], res["best_unit"]
        return {
            "rf_rmse_neurn": _on_cells(self.ctx, best, np.nan),
            "rf_unit_neurn": _on_cells(self.ctx, unit, -1),
        }


register_metric(
    Metric(
        name="rf_rmse",
        kind="cell",
        higher_is_better=False,
        description="RMSE between a neuron's map and its best unit's map (paper)",
        layer=RFScorer,
        cell_var="rf_rmse",
        variables={
            "rf_rmse": Variable(),
            "rf_mean_rmse": Variable(),
            "rf_unit": Variable(("cell",), -1, "int64"),
            "rf_unit_activity": Variable(("cell", "quantile"), coords={"quantile": QUANTILES}),
        },
        unit_var="rf_unit",
    )
)
register_metric(
    Metric(
        name="rf_rmse_neurn",
        kind="cell",
        higher_is_better=False,
        description="rf_rmse with NeuRN applied to the feature maps first (paper)",
        layer=RFNeuRNScorer,
        cell_var="rf_rmse_neurn",
        variables={
            "rf_rmse_neurn": Variable(),
            "rf_unit_neurn": Variable(("cell",), -1, "int64"),
        },
        unit_var="rf_unit_neurn",
    )
)
