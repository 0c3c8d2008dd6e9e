"""The paper's receptive-field comparison: RMSE between a neuron's map N = T'F_S and the map
of its best unit, on the feature maps as they are and after NeuRN (selected neurons only).

The best unit is a max over the layer's units, which favours wide layers on pure noise; the
null is the same min-RMSE over the same units for maps made from permuted responses, found in
the same pass (the permuted maps ride along as extra neurons).
"""

from __future__ import annotations

import warnings

import numpy as np

from .. import receptive_fields as rf
from ..inference import permuted_columns, unstack_null
from ..registry import Metric, Variable, register_metric

ORDER = 5

#: quantiles of the activity (over images) of each neuron's best-matching unit (bottom-up)
QUANTILES = (0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0)


def _maps(ctx, activity: np.ndarray) -> np.ndarray:
    return rf.unit_maps(
        activity, ctx.stimulus_matrix, bool(ctx.cfg["map_center"]), ctx.cfg["map_normalize"]
    )


def _all_maps(ctx) -> tuple[np.ndarray, int]:
    """The selected neurons' maps, then the maps of their permuted responses; n_perm."""
    perms = ctx.perms.get("n_perm_max")
    if perms is None or not len(perms):
        return ctx.maps, 0
    if "rf_maps" in ctx.cache:  # the same for every layer and both RF metrics
        return ctx.cache["rf_maps"], len(perms)
    Y = ctx.Y[:, ctx.selected]
    null = rf.response_maps(
        permuted_columns(Y, perms).T,
        ctx.stimulus_matrix,
        bool(ctx.cfg["map_center"]),
        ctx.cfg["map_normalize"],
    )
    ctx.cache["rf_maps"] = np.concatenate([ctx.maps, null])
    return ctx.cache["rf_maps"], len(perms)


#: most bytes of unit maps made at once (float64, a few times that while they are
#: normalised): the maps of 65536 units on the default 32 x 40 grid, whatever
#: compare.unit_chunk (a wider chunk streams faster on a GPU; the maps are made on the host)
MAP_BYTES = 65536 * 32 * 40 * 8


def _unit_step(ctx) -> int:
    return max(1, int(ctx.cfg["unit_chunk"]))


def _map_step(ctx) -> int:
    """Units whose maps are made at once: compare.unit_chunk, at most MAP_BYTES of maps."""
    return max(1, min(_unit_step(ctx), MAP_BYTES // (8 * ctx.stimulus_matrix.shape[1])))


def _channel_slices(ctx, block: np.ndarray):
    """Slices of a (image, channel, y, x) block of at most compare.unit_chunk units (one
    channel at least): the store's chunks can be wider."""
    step = max(1, _unit_step(ctx) // int(np.prod(block.shape[2:])))
    for lo in range(0, block.shape[1], step):
        yield block[:, lo : lo + step]


def _feed(ctx, acc: rf.RMSEAccumulator, T: np.ndarray, track: bool) -> None:
    """Maps of the units T (images, units), `_map_step` units at a time, into acc."""
    step = _map_step(ctx)
    for lo in range(0, T.shape[1], step):
        t = T[:, lo : lo + step]
        acc.update(_maps(ctx, t), activity=t if track else None)


def _split(ctx, best: np.ndarray, n_perm: int) -> tuple[np.ndarray, np.ndarray | None]:
    """The observed best RMSE of the selected cells, and its null (n_perm, cells)."""
    k = int(ctx.selected.sum())
    if not n_perm:
        return best[:k], None
    null = np.full((n_perm, ctx.n_cells), np.nan)
    null[:, ctx.selected] = unstack_null(best[k:], n_perm, k)
    return best[:k], null


def _on_cells(ctx, values: np.ndarray, fill) -> np.ndarray:
    """Values of the selected cells spread over all the job's cells (fill elsewhere)."""
    out = np.full((ctx.n_cells,) + values.shape[1:], fill, dtype=np.asarray(values).dtype)
    out[ctx.selected] = values
    return out


class RFScorer:
    """Unit = a channel's spatially averaged activity (spatial layers) or a flat unit; the
    maps are made `_map_step` units at a time, whatever the store's chunks."""

    def __init__(self, ctx):
        self.ctx = ctx
        maps, self.n_perm = _all_maps(ctx)
        self.acc = rf.RMSEAccumulator(maps, device=ctx.device)

    def update(self, block: np.ndarray) -> None:
        if block.ndim != 4:
            _feed(self.ctx, self.acc, block.reshape(self.ctx.n_images, -1), True)
            return
        for part in _channel_slices(self.ctx, block):
            _feed(self.ctx, self.acc, rf.channel_activity(part)[0], True)

    def result(self, layer) -> dict:
        res = self.acc.result()
        k = int(self.ctx.selected.sum())
        best, null = _split(self.ctx, res["best_rmse"], self.n_perm)
        q = np.full((k, len(QUANTILES)), np.nan)
        if "best_activity" in res:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                q = np.nanquantile(res["best_activity"][:k], QUANTILES, axis=1).T
        return {
            "rf_rmse": _on_cells(self.ctx, best, np.nan),
            "rf_mean_rmse": _on_cells(self.ctx, res["mean_rmse"][:k], np.nan),
            "rf_unit": _on_cells(self.ctx, res["best_unit"][:k], -1),
            "rf_unit_activity": _on_cells(self.ctx, q, np.nan),
            "null": null,
        }


class RFNeuRNScorer:
    """NeuRN on the feature maps first (compare.neurn); flat or 1x1 layers have no space for
    it and score NaN. With max_over: image the per-image maximum spans all channels, so the
    chunks' scales are combined before the maps are made. The channels' activity (images,
    channels) is kept; maps are made `_map_step` channels at a time."""

    def __init__(self, ctx):
        self.ctx = ctx
        self.activity, self.scales = [], []

    def update(self, block: np.ndarray) -> None:
        if block.ndim == 4 and block.shape[2] * block.shape[3] > 1:
            neurn = dict(self.ctx.cfg["neurn"])
            for part in _channel_slices(self.ctx, block):
                t, s = rf.channel_activity(part, neurn, device=self.ctx.device)
                self.activity.append(t)
                self.scales.append(s)

    def result(self, layer) -> dict:
        n = int(self.ctx.selected.sum())
        best, unit, null = np.full(n, np.nan), np.full(n, -1, dtype=np.int64), None
        if self.activity:
            T = np.concatenate(self.activity, axis=1)
            if self.scales[0] is not None:
                scale = np.max(np.stack(self.scales), axis=0)
                T = T / np.where(scale > 0, scale, 1.0)[:, None]
            maps, n_perm = _all_maps(self.ctx)
            acc = rf.RMSEAccumulator(maps, device=self.ctx.device)
            _feed(self.ctx, acc, T, False)
            res = acc.result()
            best, null = _split(self.ctx, res["best_rmse"], n_perm)
            unit = res["best_unit"][:n]
        return {
            "rf_rmse_neurn": _on_cells(self.ctx, best, np.nan),
            "rf_unit_neurn": _on_cells(self.ctx, unit, -1),
            "null": null,
        }


UNIT = Variable(("cell",), -1, "int64")
for _name, _scorer, _about, _extra in (
    ("rf_rmse", RFScorer, "RMSE between a neuron's map and its best unit's map (paper)", {
        "rf_mean_rmse": Variable(),
        "rf_unit_activity": Variable(("cell", "quantile"), coords={"quantile": QUANTILES}),
    }),
    ("rf_rmse_neurn", RFNeuRNScorer, "rf_rmse with NeuRN on the feature maps first (paper)", {}),
):  # fmt: skip
    _unit = "rf_unit" + _name.removeprefix("rf_rmse")
    register_metric(
        Metric(
            name=_name,
            kind="cell",
            higher_is_better=False,
            description=_about,
            layer=_scorer,
            cell_var=_name,
            variables={_name: Variable(), _unit: UNIT, **_extra},
            unit_var=_unit,
            null_perms="n_perm_max",
        )
    )
