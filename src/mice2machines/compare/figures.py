"""Figures of the comparison (matplotlib; each function returns a Figure)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..plotting import pyplot, tight
from .registry import get_metric

AREA_ORDER = ("VISp", "VISl", "VISal", "VISpm", "VISam", "VISrl")


#: the longest side of a figure: inches (a report page's height) and PNG pixels
MAX_INCHES = 40
MAX_PIXELS = 4800


def save(fig, png, dpi: int = 120, note: str | None = None) -> list[Path]:
    """Write a figure as PNG and, beside it, SVG (the same stem); closes it. ``note``: why
    the scores have no noise ceiling (the neural store's ``ceiling_note``), written on the
    figure and into the PNG's metadata (Description). The PNG's longer side is at most
    MAX_PIXELS (a lower dpi for a bigger figure): the renderer's memory grows with its area."""
    plt = pyplot()
    dpi = min(dpi, MAX_PIXELS / max(fig.get_size_inches()))
    png = Path(png)
    png.parent.mkdir(parents=True, exist_ok=True)
    if note:
        mark_no_ceiling(fig, note)
    out = [png, png.with_suffix(".svg")]
    for path in out:
        tmp = path.with_name(f".{path.name}.part")
        meta = {"Description": note} if note and path.suffix == ".png" else None
        fig.savefig(tmp, dpi=dpi, format=path.suffix[1:], metadata=meta)
        tmp.replace(path)
    plt.close(fig)
    return out


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
    plt = pyplot()
    d = df[(df["metric"] == metric) & (df["group_by"] == group_by)]
    models = list(dict.fromkeys(d["model"]))
    fig, axes = plt.subplots(
        len(models) or 1,
        1,
        squeeze=False,
        figsize=(
            min(14, max(6, 0.12 * d["layer_index"].max() + 4 if len(d) else 6)),
            min(MAX_INCHES, 1.0 + 0.45 * max(1, d["group_value"].nunique()) * max(1, len(models))),
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
        step = max(1, -(-len(piv.columns) // 40))  # at most ~40 layer names per panel
        ticks = list(range(0, len(piv.columns), step))
        ax.set_xticks(ticks, [layers[piv.columns[i]] for i in ticks], rotation=90, fontsize=6)
        ax.set_xlabel("layer (forward order)", fontsize=8)
        ax.set_ylabel(group_by, fontsize=8)
        ax.set_title(model, fontsize=9)
        fig.colorbar(im, ax=ax, label=metric)
    if not models:
        axes[0, 0].text(0.5, 0.5, "no data", ha="center")
    fig.suptitle(f"{metric}: {group_by} x layer (grey: not significant)")
    tight(fig)
    return fig


def _grid(plt, n: int, ncol: int = 3, size=(4.2, 3.3), **kw):
    """A grid of n panels (rows of at most ncol) readable at report width; spare ones off."""
    ncol = max(1, min(ncol, n))
    nrow = max(1, -(-n // ncol))
    fig, axes = plt.subplots(
        nrow, ncol, squeeze=False, figsize=(size[0] * ncol, size[1] * nrow + 0.6), **kw
    )
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[: max(n, 1)])


def model_colours(models) -> dict:
    """One fixed colour per model (tab10, then tab20), the same in every figure."""
    plt = pyplot()
    models = list(dict.fromkeys(models))
    cmap = plt.get_cmap("tab10" if len(models) <= 10 else "tab20")
    return {m: cmap(i % cmap.N) for i, m in enumerate(models)}


def _score_label(metric: str) -> str:
    return f"{metric} score" + (" (lower = more similar)" if _lower(metric) else "")


def _model_legend(fig, colours: dict, extra=()) -> None:
    handles = [
        pyplot().Line2D([], [], color=c, marker="o", lw=1.5, label=m) for m, c in colours.items()
    ]
    fig.legend(
        handles=handles + list(extra),
        loc="lower center",
        ncol=min(5, len(handles) + len(extra)),
        fontsize=8,
        frameon=False,
    )


def layer_curves(df: pd.DataFrame, metric: str, group_by: str = "area", fdr_alpha=0.05):
    """One panel per area: the score over relative layer depth, one line per model with its
    bootstrap interval as error bars, the chance band (null mean +- 2 null sd, per model),
    the noise-ceiling band (its range over models), the inter-animal ceiling of a mapping
    metric (dashed) and stars where q < fdr_alpha."""
    plt = pyplot()
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    d = df[(df["metric"] == metric) & (df["group_by"] == group_by)]
    areas = _order(d["group_value"].astype(str))
    colours = model_colours(d["model"])
    fig, axes = _grid(plt, len(areas), sharex=True, sharey=True)
    for ax, area in zip(axes, areas, strict=False):
        a = d[d["group_value"].astype(str) == area]
        ceil = a["ceiling"].dropna() if "ceiling" in a else pd.Series(dtype=float)
        if len(ceil):
            lo, hi = float(ceil.min()), float(ceil.max())
            ax.axhspan(lo - 0.01, hi + 0.01, color="0.3", alpha=0.35, lw=0)
        animal = _inter_animal(a)
        if animal is not None:
            ax.axhline(animal, color="tab:purple", ls="--", lw=1.2)
        for model, m in a.groupby("model", sort=False):
            m = m.sort_values("layer_depth")
            x, y, c = m["layer_depth"].to_numpy(), m["score"].to_numpy(), colours[model]
            if {"null_mean", "null_sd"} <= set(m) and m["null_mean"].notna().any():
                mu, sd = m["null_mean"].to_numpy(), m["null_sd"].to_numpy()
                ax.fill_between(x, mu - 2 * sd, mu + 2 * sd, color=c, alpha=0.12, lw=0)
            err = None
            if {"ci_low", "ci_high"} <= set(m) and m["ci_low"].notna().any():
                err = np.clip([y - m["ci_low"].to_numpy(), m["ci_high"].to_numpy() - y], 0, None)
                err = np.nan_to_num(err)
            ax.errorbar(x, y, yerr=err, color=c, marker="o", ms=2.5, lw=1.2, capsize=1.5)
            sig = _significant(m).to_numpy(bool) if "q" in m else np.zeros(len(m), bool)
            if "q" in m and m["q"].notna().any():
                ax.scatter(
                    x[sig], y[sig], marker="*", s=45, color=c, edgecolor="k", lw=0.4, zorder=3
                )
        ax.set_title(
            f"{area} (n = {int(a['n_cells'].max())} cells)"
            if "n_cells" in a and a["n_cells"].notna().any()
            else area,
            fontsize=9,
        )
        ax.set_xlabel("relative layer depth")
        ax.set_ylabel(_score_label(metric), fontsize=8)
        ax.grid(alpha=0.3)
    extra = [
        Patch(color="0.3", alpha=0.35, label="noise ceiling (range over models)"),
        Patch(color="0.5", alpha=0.2, label="chance: null mean ± 2 null sd"),
        *(
            [Line2D([], [], color="tab:purple", ls="--", label="inter-animal ceiling")]
            if _inter_animal(d) is not None
            else []
        ),
        Line2D([], [], marker="*", color="0.4", mec="k", ls="", ms=8, label=f"q < {fdr_alpha:g}"),
    ]
    _model_legend(fig, colours, extra)
    fig.suptitle(f"{metric} by {group_by} over layer depth (error bars: bootstrap CI)")
    tight(fig, (0, 0.1 if len(areas) > 3 else 0.16, 1, 1))
    return fig


def _inter_animal(rows: pd.DataFrame) -> float | None:
    """The inter-animal ceiling of rows (the same for every model of a group), or None."""
    if "ceiling_inter_animal" not in rows or not rows["ceiling_inter_animal"].notna().any():
        return None
    return float(rows["ceiling_inter_animal"].dropna().iloc[0])


def best_layer(df: pd.DataFrame, metrics, group_by: str = "area"):
    """Relative depth of each model's best layer per area, one panel per metric, among the
    layers that pass the FDR threshold; a model with none for an area is counted below the
    axis ("none")."""
    plt = pyplot()
    metrics = [m for m in _per_layer(metrics) if m in set(df["metric"])]
    colours = model_colours(df["model"])
    fig, axes = _grid(plt, len(metrics), ncol=4, size=(3.6, 3.2), sharey=True)
    offsets = np.linspace(-0.25, 0.25, max(1, len(colours)))
    for ax, metric in zip(axes, metrics, strict=False):
        d = df[(df["metric"] == metric) & (df["group_by"] == group_by)]
        order = _order(d["group_value"].astype(str))
        sig = d[_significant(d)]
        by = sig.groupby(["model", "group_value"])["score"]
        best = sig.loc[(by.idxmin() if _lower(metric) else by.idxmax()).values]
        for i, area in enumerate(order):
            b = best[best["group_value"].astype(str) == area]
            for k, (model, c) in enumerate(colours.items()):
                y = b.loc[b["model"] == model, "layer_depth"].to_numpy()
                ax.scatter(i + offsets[k] + 0 * y, y, s=18, color=c)
            if len(b):
                ax.hlines(np.median(b["layer_depth"]), i - 0.35, i + 0.35, color="k")
            n_none = d.loc[d["group_value"].astype(str) == area, "model"].nunique() - len(b)
            if n_none:
                ax.text(i, -0.1, f"none {n_none}", ha="center", va="top", fontsize=6)
        ax.set_xticks(range(len(order)), order, rotation=45, fontsize=8)
        ax.set_title(metric, fontsize=9)
        ax.set_ylim(-0.2, 1.05)
        ax.set_ylabel("best layer (relative depth)", fontsize=8)
        ax.set_xlabel(group_by, fontsize=8)
        ax.tick_params(labelleft=True)
    _model_legend(fig, colours, [pyplot().Line2D([], [], color="k", label="median")])
    tight(fig, (0, 0.08, 1, 1))
    return fig


def ei_profile(df: pd.DataFrame, metrics):
    """Score against relative layer depth for excitatory and inhibitory groups, one panel per
    metric: thin lines per model, thick the median over models in depth bins of 0.1."""
    plt = pyplot()
    metrics = [m for m in _per_layer(metrics) if m in set(df["metric"])]
    fig, axes = _grid(plt, len(metrics), ncol=4, size=(3.6, 3.0))
    colours = {"excitatory": "tab:red", "inhibitory": "tab:blue"}
    for ax, metric in zip(axes, metrics, strict=False):
        d = df[(df["metric"] == metric) & (df["group_by"] == "ei_class")]
        for (_model, cls), m in d.groupby(["model", "group_value"]):
            m = m.sort_values("layer_depth")
            ax.plot(m["layer_depth"], m["score"], color=colours.get(cls, "grey"), alpha=0.3, lw=1)
        for cls, m in d.groupby("group_value"):
            bins = np.round(m["layer_depth"] * 10) / 10
            med = m.groupby(bins)["score"].median()
            ax.plot(med.index, med.values, color=colours.get(cls, "grey"), lw=2.5)
        ax.set_title(metric, fontsize=9)
        ax.set_xlabel("relative layer depth", fontsize=8)
        ax.set_ylabel(_score_label(metric), fontsize=8)
    handles = [
        pyplot().Line2D([], [], color=c, lw=2.5, label=f"{k} (median)") for k, c in colours.items()
    ]
    handles.append(pyplot().Line2D([], [], color="grey", lw=1, alpha=0.5, label="one model"))
    fig.legend(handles=handles, loc="lower center", ncol=3, fontsize=8, frameon=False)
    tight(fig, (0, 0.07, 1, 1))
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
    """The paper's figure, one panel per model (random twins apart from trained ones): each
    selected neuron's RMSE to its best unit over all layers, per area (or Cre line), without
    (grey) and with (green) NeuRN on the feature maps; medians printed."""
    plt = pyplot()
    t = rmse_table(ds, by)
    models = list(dict.fromkeys(t["model"].astype(str))) if len(t) else []
    groups = _order(t[by].astype(str)) if len(t) else []
    variants = ("feature maps", "NeuRN + feature maps")
    colours = {"feature maps": "tab:grey", "NeuRN + feature maps": "tab:green"}
    width = 0.8 / len(variants)
    fig, axes = _grid(
        plt, len(models), ncol=3, size=(0.75 * max(4, len(groups)) + 1.2, 3.2), sharey=True
    )
    for ax, model in zip(axes, models, strict=False):
        tm = t[t["model"].astype(str) == model]
        for vi, var in enumerate(variants):
            data = [
                tm.loc[(tm[by].astype(str) == g) & (tm["variant"] == var), "rmse"].to_numpy()
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
                patch.set_facecolor(colours[var])
                patch.set_alpha(0.6)
            for i in keep:
                med = np.median(data[i])
                ax.text(pos[i], med, f"{med:.2f}", fontsize=5.5, ha="center", va="bottom")
        ax.set_xticks(range(len(groups)), groups, rotation=30 if by != "area" else 0, fontsize=7)
        ax.set_ylabel("RMSE to best unit", fontsize=8)
        ax.set_xlabel(by, fontsize=8)
        ax.set_title(model, fontsize=9)
        ax.tick_params(labelleft=True)
    if not models:
        axes[0].text(
            0.5, 0.5, "no receptive-field scores", ha="center", transform=axes[0].transAxes
        )
    handles = [
        pyplot().Line2D([], [], color=c, lw=6, alpha=0.6, label=v) for v, c in colours.items()
    ]
    fig.legend(handles=handles, loc="lower center", ncol=2, fontsize=8, frameon=False)
    fig.suptitle(f"neuron vs best-unit receptive-field maps, by {by}")
    tight(fig, (0, 0.07, 1, 1))
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
    """Write the figures named in outputs (PNG + SVG): {'heatmap:<metric>': path,
    'curves:<metric>': path, 'best_layer': path, 'ei': path, 'rmse_area': path,
    'rmse_cre_line': path}; ``note`` as for ``save``. The workflow draws the figure registry
    instead (mice2machines.report.registry)."""
    metrics = list(dict.fromkeys(df["metric"]))
    for key, path in outputs.items():
        kind, _, metric = key.partition(":")
        if kind == "heatmap":
            fig = heatmap(df, metric)
        elif kind == "curves":
            fig = layer_curves(df, metric, fdr_alpha=float(ds.attrs.get("fdr_alpha", 0.05)))
        elif key == "best_layer":
            fig = best_layer(df, metrics)
        elif key == "ei":
            fig = ei_profile(df, metrics)
        elif key in ("rmse_area", "rmse_cre_line"):
            fig = rmse_distributions(ds, key.removeprefix("rmse_"))
        else:
            raise ValueError(f"unknown figure {key!r}")
        save(fig, path, dpi=dpi, note=note)
