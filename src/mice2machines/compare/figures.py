"""Figures of the comparison (matplotlib; each function returns a Figure)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .registry import get_metric

AREA_ORDER = ("VISp", "VISl", "VISal", "VISpm", "VISam", "VISrl")


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _order(values, preferred=AREA_ORDER) -> list:
    values = list(dict.fromkeys(values))
    first = [v for v in preferred if v in values]
    return first + sorted(v for v in values if v not in first)


def _lower(metric: str) -> bool:
    return not get_metric(metric).higher_is_better


def _significant(d: pd.DataFrame) -> pd.Series:
    """Which rows pass the FDR threshold (every row when the table has no nulls)."""
    if "significant" not in d or d["q"].isna().all():
        return pd.Series(True, index=d.index)
    return d["significant"].fillna(False).astype(bool)


def _per_layer(metrics) -> list:
    """The metrics with a per-layer score (a per-model metric has no best layer)."""
    return [m for m in metrics if not get_metric(m).per_model]


def heatmap(df: pd.DataFrame, metric: str, group_by: str = "area"):
    """Score per area (rows) x layer (columns), one panel per model; cells that are not
    significant against their permutation null (BH q >= compare.fdr_alpha) are greyed out."""
    plt = _plt()
    d = df[(df["metric"] == metric) & (df["group_by"] == group_by)]
    models = list(dict.fromkeys(d["model"]))
    fig, axes = plt.subplots(
        len(models) or 1,
        1,
        squeeze=False,
        figsize=(
            max(6, 0.35 * d["layer_index"].max() + 3 if len(d) else 6),
            1.0 + 0.45 * max(1, d["group_value"].nunique()) * max(1, len(models)),
        ),
    )
    vmin, vmax = (d["score"].min(), d["score"].max()) if len(d) else (0, 1)
    cmap = "viridis_r" if _lower(metric) else "viridis"
    for ax, model in zip(axes[:, 0], models, strict=False):
        m = d[d["model"] == model]
        piv = m.pivot_table(index="group_value", columns="layer_index", values="score")
        piv = piv.reindex(_order(piv.index))
        layers = m.drop_duplicates("layer_index").set_index("layer_index")["layer"]
        im = ax.imshow(
            piv.values, aspect="auto", cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest"
        )
        sig = m.assign(sig=_significant(m)).pivot_table(
            index="group_value", columns="layer_index", values="sig", aggfunc="max"
        )
        grey = ~sig.reindex(index=piv.index, columns=piv.columns).fillna(False).to_numpy(bool)
        if grey.any():
            ax.imshow(
                np.where(grey, 1.0, np.nan),
                aspect="auto",
                cmap="Greys",
                vmin=0,
                vmax=2,
                alpha=0.85,
                interpolation="nearest",
            )
        ax.set_yticks(range(len(piv.index)), piv.index)
        ax.set_xticks(
            range(len(piv.columns)), [layers[i] for i in piv.columns], rotation=90, fontsize=6
        )
        ax.set_title(model, fontsize=9)
        fig.colorbar(im, ax=ax, label=metric)
    if not models:
        axes[0, 0].text(0.5, 0.5, "no data", ha="center")
    fig.suptitle(f"{metric}: {group_by} x layer (grey: not significant)")
    fig.tight_layout()
    return fig


def best_layer(df: pd.DataFrame, metrics, group_by: str = "area"):
    """Relative depth of each model's best layer per area, one panel per metric, among the
    layers that pass the FDR threshold; a model with none for an area is drawn as an x
    below the axis ("none")."""
    plt = _plt()
    metrics = [m for m in _per_layer(metrics) if m in set(df["metric"])]
    fig, axes = plt.subplots(
        1,
        max(1, len(metrics)),
        squeeze=False,
        figsize=(3.2 * max(1, len(metrics)), 3.2),
        sharey=True,
    )
    rng = np.random.default_rng(0)
    for ax, metric in zip(axes[0], metrics, strict=False):
        d = df[(df["metric"] == metric) & (df["group_by"] == group_by)]
        order = _order(d["group_value"])
        sig = d[_significant(d)]
        by = sig.groupby(["model", "group_value"])["score"]
        best = sig.loc[(by.idxmin() if _lower(metric) else by.idxmax()).values]
        for i, area in enumerate(order):
            y = best.loc[best["group_value"] == area, "layer_depth"].to_numpy()
            ax.scatter(i + rng.uniform(-0.15, 0.15, len(y)), y, s=12, alpha=0.6)
            if len(y):
                ax.hlines(np.median(y), i - 0.3, i + 0.3, color="k")
            n_none = d.loc[d["group_value"] == area, "model"].nunique() - len(y)
            if n_none:
                ax.scatter([i], [-0.08], marker="x", color="grey", s=14)
                ax.text(i, -0.13, f"none {n_none}", ha="center", va="top", fontsize=6)
        ax.set_xticks(range(len(order)), order, rotation=45)
        ax.set_title(metric, fontsize=9)
        ax.set_ylim(-0.2, 1.05)
    axes[0, 0].set_ylabel("best layer (relative depth)")
    fig.tight_layout()
    return fig


def ei_profile(df: pd.DataFrame, metrics):
    """Score against relative layer depth for excitatory and inhibitory groups."""
    plt = _plt()
    metrics = [m for m in _per_layer(metrics) if m in set(df["metric"])]
    fig, axes = plt.subplots(
        1, max(1, len(metrics)), squeeze=False, figsize=(3.2 * max(1, len(metrics)), 3.0)
    )
    colours = {"excitatory": "tab:red", "inhibitory": "tab:blue"}
    for ax, metric in zip(axes[0], metrics, strict=False):
        d = df[(df["metric"] == metric) & (df["group_by"] == "ei_class")]
        for (_model, cls), m in d.groupby(["model", "group_value"]):
            m = m.sort_values("layer_depth")
            ax.plot(m["layer_depth"], m["score"], color=colours.get(cls, "grey"), alpha=0.35, lw=1)
        for cls, m in d.groupby("group_value"):
            bins = np.round(m["layer_depth"] * 10) / 10
            med = m.groupby(bins)["score"].median()
            ax.plot(med.index, med.values, color=colours.get(cls, "grey"), lw=2.5, label=cls)
        ax.set_title(metric, fontsize=9)
        ax.set_xlabel("relative layer depth")
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def rmse_table(ds, by: str = "area") -> pd.DataFrame:
    """Per selected cell and model: lowest RMSE over layers, without and with NeuRN."""
    rows = []
    for var, label in (("rf_rmse", "feature maps"), ("rf_rmse_neurn", "NeuRN + feature maps")):
        if var not in ds:
            continue
        v = ds[var].min("layer", skipna=True)
        frame = v.to_dataframe(name="rmse").reset_index()
        frame["variant"] = label
        rows.append(frame)
    if not rows:
        return pd.DataFrame(columns=["cell", "model", "rmse", "variant", by])
    t = pd.concat(rows, ignore_index=True).dropna(subset=["rmse"])
    return t


def rmse_distributions(ds, by: str = "area"):
    """The paper's figure: per-neuron RMSE to the best unit, per area (or Cre line),
    with and without NeuRN on the feature maps; medians printed."""
    plt = _plt()
    t = rmse_table(ds, by)
    groups = _order(t[by].astype(str)) if len(t) else []
    variants = list(dict.fromkeys(t["variant"])) if len(t) else []
    fig, ax = plt.subplots(figsize=(1.1 * max(4, len(groups)) + 2, 3.6))
    width = 0.8 / max(1, len(variants))
    colours = ["tab:grey", "tab:green"]
    for vi, var in enumerate(variants):
        data = [
            t.loc[(t[by].astype(str) == g) & (t["variant"] == var), "rmse"].to_numpy()
            for g in groups
        ]
        pos = np.arange(len(groups)) + (vi - (len(variants) - 1) / 2) * width
        keep = [i for i, x in enumerate(data) if len(x)]
        if not keep:
            continue
        bp = ax.boxplot(
            [data[i] for i in keep],
            positions=pos[keep],
            widths=width * 0.9,
            patch_artist=True,
            showfliers=False,
        )
        for patch in bp["boxes"]:
            patch.set_facecolor(colours[vi % 2])
            patch.set_alpha(0.6)
        for i in keep:
            ax.text(
                pos[i],
                np.median(data[i]),
                f"{np.median(data[i]):.3f}",
                fontsize=6,
                ha="center",
                va="bottom",
            )
        ax.plot([], [], color=colours[vi % 2], lw=6, alpha=0.6, label=var)
    ax.set_xticks(range(len(groups)), groups, rotation=30 if by != "area" else 0)
    ax.set_ylabel("RMSE to best unit")
    ax.set_title(f"neuron vs unit receptive-field maps, by {by}")
    if variants:
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def mark_no_ceiling(fig, note: str) -> None:
    """Say on a figure that the scores have no noise ceiling (``note``: why)."""
    fig.text(
        0.01,
        0.005,
        "no ceiling: " + note.removeprefix("no ceiling: "),
        fontsize=6,
        color="firebrick",
        ha="left",
        va="bottom",
        wrap=True,
    )


def save_all(ds, df: pd.DataFrame, outputs: dict, dpi: int = 120, note: str | None = None) -> None:
    """Write the figures named in outputs: {'heatmap:<metric>': path, 'best_layer': path,
    'ei': path, 'rmse_area': path, 'rmse_cre_line': path}. ``note``: why the scores have no
    noise ceiling (the neural store's ``ceiling_note``), written on every figure and into
    its PNG metadata (Description)."""
    plt = _plt()
    metrics = list(dict.fromkeys(df["metric"]))
    for key, path in outputs.items():
        if key.startswith("heatmap:"):
            fig = heatmap(df, key.split(":", 1)[1])
        elif key == "best_layer":
            fig = best_layer(df, metrics)
        elif key == "ei":
            fig = ei_profile(df, metrics)
        elif key == "rmse_area":
            fig = rmse_distributions(ds, "area")
        elif key == "rmse_cre_line":
            fig = rmse_distributions(ds, "cre_line")
        else:
            raise ValueError(f"unknown figure {key!r}")
        if note:
            mark_no_ceiling(fig, note)
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=dpi, metadata={"Description": note} if note else None)
        plt.close(fig)
