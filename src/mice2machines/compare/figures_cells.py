"""Figures of single neurons: reliability, the UMAP selection and example receptive fields.

Figure functions take arrays and tables and return a matplotlib Figure; `best_unit_maps`
is the one reader (of the activation stores) that the example figure needs.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..io import as_str
from ..plotting import pyplot, tight
from .figures import _grid, _order


def reliability_histogram(reliability, area, selected=None, bins: int = 30):
    """Split-half reliability of every cell, one stacked histogram per area; the selected
    neurons (the receptive-field analysis) outlined in black."""
    plt = pyplot()
    rel = np.asarray(reliability, float)
    area = as_str(area)
    ok = np.isfinite(rel)
    edges = np.histogram_bin_edges(rel[ok], bins=bins) if ok.any() else np.linspace(0, 1, bins)
    fig, ax = plt.subplots(figsize=(7, 3.6))
    areas = _order(area[ok])
    ax.hist([rel[ok & (area == a)] for a in areas], bins=edges, stacked=True, label=areas)
    if selected is not None:
        sel = ok & np.asarray(selected, bool)
        ax.hist(rel[sel], bins=edges, histtype="step", color="k", lw=1.5, label="selected")
    ax.set_xlabel("split-half reliability (Spearman-Brown)")
    ax.set_ylabel("cells")
    ax.set_title(f"response reliability of {int(ok.sum())} cells")
    ax.legend(fontsize=7, ncol=2)
    tight(fig)
    return fig


def umap_selection(table: pd.DataFrame):
    """The neuron selection: each E/I class's UMAP embedding of the receptive-field maps,
    coloured by K-means cluster; the neuron nearest each centre (selected) ringed."""
    plt = pyplot()
    classes = list(dict.fromkeys(table["ei_class"].astype(str)))
    fig, axes = _grid(plt, len(classes), ncol=2, size=(4.6, 4.0))
    for ax, cls in zip(axes, classes, strict=False):
        t = table[table["ei_class"].astype(str) == cls]
        sel = t["selected"].astype(bool).to_numpy()
        ax.scatter(t["embed_x"], t["embed_y"], c=t["cluster"], cmap="tab20", s=10, alpha=0.7)
        ax.scatter(
            t.loc[sel, "embed_x"],
            t.loc[sel, "embed_y"],
            s=70,
            facecolor="none",
            edgecolor="k",
            lw=1.2,
            label=f"selected ({int(sel.sum())})",
        )
        centres = t.groupby("cluster")[["embed_x", "embed_y"]].mean()
        ax.scatter(
            centres["embed_x"],
            centres["embed_y"],
            marker="X",
            s=60,
            color="k",
            label="cluster mean",
        )
        ax.set_title(
            f"{cls}: {int(sel.sum())} of {len(t)} cells selected, {len(centres)} clusters",
            fontsize=9,
        )
        ax.set_xlabel("UMAP 1")
        ax.set_ylabel("UMAP 2")
        ax.legend(fontsize=7, loc="best")
    fig.suptitle("neuron selection (UMAP + K-means; colour: cluster)")
    tight(fig)
    return fig


def example_maps(neuron: np.ndarray, unit: np.ndarray, labels, unit_labels):
    """Neuron receptive-field maps (top row) beside the maps of their best-matching units
    (bottom row), on one symmetric colour scale."""
    plt = pyplot()
    k = len(neuron)
    fig, axes = plt.subplots(
        2, max(1, k), squeeze=False, figsize=(2.6 * max(1, k) + 1, 5.4), layout="constrained"
    )
    lim = float(np.nanmax(np.abs(np.concatenate([np.ravel(neuron), np.ravel(unit)])))) if k else 1
    im = None
    for j in range(k):
        for row, (img, text) in enumerate(((neuron[j], labels[j]), (unit[j], unit_labels[j]))):
            ax = axes[row, j]
            im = ax.imshow(img, cmap="RdBu_r", vmin=-lim, vmax=lim)
            ax.set_title(text, fontsize=7)
            ax.set_xticks([])
            ax.set_yticks([])
    if im is not None:
        fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.7, label="map (normalised)")
        axes[0, 0].set_ylabel("neuron", fontsize=9)
        axes[1, 0].set_ylabel("best unit", fontsize=9)
    fig.suptitle("example receptive fields: neurons (top), their best-matching units (bottom)")
    return fig


def example_cells(ds, model: str, k: int = 4, var: str = "rf_rmse") -> pd.DataFrame:
    """The k selected cells best matched by ``model`` (lowest RMSE over layers; excitatory
    and inhibitory alternating), with their best layer and unit."""
    v = ds[var].sel(model=model).transpose("cell", "layer").values
    unit = ds[var.replace("rf_rmse", "rf_unit")].sel(model=model).transpose("cell", "layer").values
    ok = np.isfinite(v).any(1)
    best = np.where(ok, np.argmin(np.where(np.isfinite(v), v, np.inf), 1), 0)
    at = np.arange(len(v))
    t = pd.DataFrame(
        {
            "cell": ds["cell"].values,
            "rmse": np.where(ok, v[at, best], np.nan),
            "layer": as_str(ds["layer"].values)[best],
            "unit": unit[at, best],
            "ei_class": as_str(ds["ei_class"].values),
            "area": as_str(ds["area"].values),
        }
    )[ok]
    t = t.sort_values("rmse")
    parts = [g.assign(rank=range(len(g))) for _, g in t.groupby("ei_class")]
    if not parts:
        return t
    return pd.concat(parts).sort_values(["rank", "ei_class"]).head(k).reset_index(drop=True)


def best_unit_maps(cells: pd.DataFrame, neural, activations, cfg) -> np.ndarray:
    """(cells, h, w) receptive-field maps of each row's best unit (its layer's channel
    activity for spatial layers), from the model's activation store ``activations``."""
    from ..models.store import open_layer
    from . import receptive_fields as rf

    F = neural["stimulus_matrix"].values
    shape = F.shape[1:]
    F = F.reshape(len(F), -1)
    out = []
    for layer, unit in zip(cells["layer"], cells["unit"], strict=True):
        da = open_layer(activations, layer)
        if "image" in da.coords:
            da = da.sel(image=neural["image"].values)
        if da.ndim == 4:
            x = rf.channel_activity(da[:, int(unit) : int(unit) + 1].values)[0]
        else:
            x = da[:, [int(unit)]].values  # the unit's column only: a layer can be 10^6 wide
        m = rf.unit_maps(x, F, bool(cfg["map_center"]), cfg["map_normalize"])
        out.append(m.reshape(shape))
    return np.asarray(out)
