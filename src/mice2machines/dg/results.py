"""Domain-generalization results: metrics JSONs -> one table, a plot and a checkpoint manifest.

Per (arch, source, target): accuracy mean +- std over seeds for each variant, and the NeuRN
minus baseline difference paired by seed (same seed = same split, batch order and initial
weights) with a Student-t confidence interval over the per-seed differences. Accuracies are
those of the checkpoint selected on source-domain validation (DomainBed's training-domain
selection); a target equal to the source is scored on the held-out source split.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

DIFF = "neurn-baseline"
KEYS = ["arch", "source", "target"]


def collect(paths: Iterable[str | os.PathLike]) -> pd.DataFrame:
    """One tidy row per (job, target): arch, variant, source, seed, target, acc, n, split."""
    rows = []
    for p in paths:
        m = json.loads(Path(p).read_text())
        for target, r in m["targets"].items():
            rows.append(
                {
                    "arch": m["arch"],
                    "variant": m["variant"],
                    "source": m["source"],
                    "seed": int(m["seed"]),
                    "target": target,
                    "acc": float(r["acc"]),
                    "n": int(r["n"]),
                    "split": r.get("split", ""),
                    "val_acc": float(m["val_acc"]),
                    "selected_epoch": int(m["selected_epoch"]),
                    "metrics": str(p),
                }
            )
    if not rows:
        raise ValueError("no metrics to collect")
    df = pd.DataFrame(rows)
    dup = df.duplicated(["arch", "variant", "source", "seed", "target"])
    if dup.any():
        raise ValueError(f"duplicate jobs in metrics: {df[dup].metrics.tolist()}")
    return df


def t_interval(diffs: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high) of a Student-t interval for the mean; NaN bounds for fewer than 2."""
    from scipy import stats

    d = np.asarray(diffs, float)
    mean = float(d.mean()) if len(d) else math.nan
    if len(d) < 2:
        return mean, math.nan, math.nan
    half = stats.t.ppf((1 + confidence) / 2, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d))
    return mean, mean - half, mean + half


def summarize(df: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """Long table: per (arch, source, target, variant) n, mean, std of accuracy; plus rows
    variant ``neurn-baseline`` with the paired difference and its t interval."""
    g = df.groupby(KEYS + ["variant"], sort=True)["acc"]
    out = g.agg(n="count", mean="mean", std=lambda a: a.std(ddof=1) if len(a) > 1 else math.nan)
    out = out.reset_index()
    out["ci_low"] = math.nan
    out["ci_high"] = math.nan
    diffs = []
    for key, sub in df.groupby(KEYS, sort=True):
        wide = sub.pivot(index="seed", columns="variant", values="acc")
        if not {"baseline", "neurn"} <= set(wide.columns):
            continue
        d = (wide["neurn"] - wide["baseline"]).dropna()  # paired: seeds run in both variants
        if d.empty:
            continue
        mean, lo, hi = t_interval(d.to_numpy(), confidence)
        diffs.append(
            {
                **dict(zip(KEYS, key, strict=True)),
                "variant": DIFF,
                "n": len(d),
                "mean": mean,
                "std": d.std(ddof=1) if len(d) > 1 else math.nan,
                "ci_low": lo,
                "ci_high": hi,
            }
        )
    if diffs:
        out = pd.concat([out, pd.DataFrame(diffs)], ignore_index=True)
    order = {"baseline": 0, "neurn": 1, DIFF: 2}
    out = out.sort_values(
        KEYS + ["variant"], key=lambda s: s.map(order) if s.name == "variant" else s
    ).reset_index(drop=True)
    out.attrs["confidence"] = confidence
    return out


def _pct(x: float, sign: bool = False) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{100 * x:+.1f}" if sign else f"{100 * x:.1f}"


def cell_text(row) -> str:
    """'97.1 ± 0.4' for a variant; '+2.3 [-0.5, +5.1]' for the paired difference."""
    if row["variant"] == DIFF:
        return (
            f"{_pct(row['mean'], True)} [{_pct(row['ci_low'], True)}, {_pct(row['ci_high'], True)}]"
        )
    if math.isnan(row["std"]):
        return _pct(row["mean"])
    return f"{_pct(row['mean'])} ± {_pct(row['std'])}"


def wide_table(summary: pd.DataFrame) -> pd.DataFrame:
    """Rows (arch, source, variant), columns targets (the source first, marked), text cells."""
    s = summary.copy()
    s["cell"] = s.apply(cell_text, axis=1)
    s["column"] = np.where(
        s["target"] == s["source"], s["target"] + " (source, held out)", s["target"]
    )
    wide = s.pivot_table(
        index=["arch", "source", "variant"], columns="column", values="cell", aggfunc="first"
    )
    cols = sorted(wide.columns, key=lambda c: (not c.endswith("(source, held out)"), c))
    order = {"baseline": 0, "neurn": 1, DIFF: 2}
    wide = wide[cols].reset_index()
    wide = wide.sort_values(
        ["arch", "source", "variant"], key=lambda c: c.map(order) if c.name == "variant" else c
    )
    return wide.fillna("")


def _mean_se(x) -> str:
    x = np.asarray(x, float)
    x = x[np.isfinite(x)]
    if not len(x):
        return ""
    if len(x) < 2:
        return f"{100 * x.mean():.1f}"
    return f"{100 * x.mean():.1f} ± {100 * x.std(ddof=1) / math.sqrt(len(x)):.1f}"


def domainbed_table(df: pd.DataFrame) -> pd.DataFrame:
    """DomainBed's form of the table: rows (arch, source, variant), columns the targets (the
    held-out source first) and ``Avg`` (each seed's mean over the other targets), cells
    accuracy (%) mean ± standard error over seeds (std / sqrt(n seeds)); the
    ``neurn-baseline`` row is the per-seed paired difference in the same form."""
    rows = []
    for (arch, source), sub in df.groupby(["arch", "source"], sort=True):
        acc = sub.pivot_table(index=["variant", "seed"], columns="target", values="acc")
        targets = sorted(acc.columns, key=lambda t: (t != source, t))
        others = [t for t in targets if t != source]
        acc["Avg"] = acc[others].mean(axis=1) if others else np.nan
        variants = [v for v in ("baseline", "neurn") if v in acc.index.get_level_values(0)]
        per = {v: acc.loc[v] for v in variants}
        if len(variants) == 2:
            per[DIFF] = (per["neurn"] - per["baseline"]).dropna(how="all")
        for variant, a in per.items():
            row = {"arch": arch, "source": source, "variant": variant, "seeds": len(a)}
            for t in [*targets, "Avg"]:
                name = f"{t} (source, held out)" if t == source else t
                row[name] = _mean_se(a[t])
            rows.append(row)
    return pd.DataFrame(rows).fillna("")


def to_markdown(wide: pd.DataFrame, summary: pd.DataFrame) -> str:
    """The wide table as GitHub markdown, with a line on what the numbers are."""
    conf = summary.attrs.get("confidence", 0.95)
    n = summary.loc[summary.variant != DIFF, "n"]
    seeds = f"{n.min()}" if n.min() == n.max() else f"{n.min()}-{n.max()}"
    head = (
        f"Accuracy (%) of the checkpoint selected on source-domain validation, mean ± std "
        f"over {seeds} seeds; `{DIFF}`: mean paired difference (points) "
        f"[{conf:.0%} t interval].\n\n"
    )
    cols = list(wide.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for _, r in wide.iterrows():
        lines.append("| " + " | ".join(str(r[c]) for c in cols) + " |")
    return head + "\n".join(lines) + "\n"


def plot_figure(summary: pd.DataFrame):
    """Left: accuracy per target (bars: variants, error bars: standard error over seeds,
    std / sqrt(n)). Right: the paired
    NeuRN - baseline difference with its t interval. One row per (arch, source)."""
    from ..plotting import pyplot, tight

    plt = pyplot()

    groups = list(summary.groupby(["arch", "source"], sort=True))
    fig, axes = plt.subplots(len(groups), 2, figsize=(11, 3.2 * len(groups)), squeeze=False)
    colors = {"baseline": "#7f7f7f", "neurn": "#d62728"}
    for row, ((arch, source), sub) in enumerate(groups):
        ax_acc, ax_diff = axes[row]
        targets = sorted(sub.target.unique(), key=lambda t: (t != source, t))
        x = np.arange(len(targets))
        for k, variant in enumerate(("baseline", "neurn")):
            v = sub[sub.variant == variant].set_index("target").reindex(targets)
            ax_acc.bar(
                x + (k - 0.5) * 0.38,
                100 * v["mean"],
                0.38,
                yerr=100 * (v["std"] / np.sqrt(v["n"])).fillna(0),
                color=colors[variant],
                label=variant,
                capsize=3,
            )
        ax_acc.set_xticks(x, [t + ("*" if t == source else "") for t in targets], rotation=20)
        ax_acc.set_ylabel("accuracy (%)")
        ax_acc.set_xlabel("target domain")
        ax_acc.set_ylim(0, 100)
        ax_acc.axhline(10, color="k", lw=0.6, ls=":")
        ax_acc.set_title(f"{arch}, trained on {source} (* held-out source)")
        ax_acc.legend(fontsize=8)
        d = sub[sub.variant == DIFF].set_index("target").reindex(targets)
        lo = (d["mean"] - d["ci_low"]).fillna(0)
        hi = (d["ci_high"] - d["mean"]).fillna(0)
        ax_diff.errorbar(
            x, 100 * d["mean"], yerr=[100 * lo, 100 * hi], fmt="o", color="k", capsize=4
        )
        ax_diff.axhline(0, color="k", lw=0.8)
        ax_diff.set_xticks(x, targets, rotation=20)
        conf = summary.attrs.get("confidence", 0.95)
        ax_diff.set_ylabel("NeuRN - baseline (points)")
        ax_diff.set_xlabel("target domain")
        ax_diff.set_title(f"paired by seed, {conf:.0%} t interval")
    tight(fig)
    return fig


def plot(summary: pd.DataFrame, path: str | os.PathLike) -> Path:
    """`plot_figure` saved as PNG."""
    import matplotlib.pyplot as plt

    from ..io import atomic_path

    fig = plot_figure(summary)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return Path(path)


def checkpoint_manifest(paths: Iterable[str | os.PathLike]) -> pd.DataFrame:
    """A model-zoo table (config/models.tsv format) of the selected checkpoints, one per job:
    builder ``digits:<arch>``, weights ``ckpt:<path>``, the NeuRN settings the job used."""
    rows = []
    for p in paths:
        m = json.loads(Path(p).read_text())
        nr = m["config"].get("neurn") if m["variant"] == "neurn" else None
        rows.append(
            {
                "name": f"dg_{m['arch']}_{m['variant']}_{m['source']}_s{m['seed']}",
                "builder": f"digits:{m['arch']}",
                "weights": f"ckpt:{Path(p).with_name('best.pt')}",
                "input_size": 32,
                "preprocess": "unit",
                "resize": "squash",
                "layers": "default",
                "neurn": ",".join(f"{k}={v}" for k, v in sorted(nr.items())) if nr else "none",
            }
        )
    return pd.DataFrame(rows)


def write_results(
    metrics_paths: Sequence[str | os.PathLike],
    csv_path,
    md_path,
    png_path,
    manifest_path=None,
    confidence: float = 0.95,
) -> pd.DataFrame:
    """Collect, summarise and write the CSV (long), markdown (wide), plot and manifest."""
    from ..io import atomic_path

    df = collect(metrics_paths)
    summary = summarize(df, confidence)
    with atomic_path(csv_path) as tmp:
        summary.to_csv(tmp, index=False, float_format="%.6g")
    with atomic_path(md_path) as tmp:
        Path(tmp).write_text(to_markdown(wide_table(summary), summary))
    plot(summary, png_path)
    if manifest_path is not None:
        with atomic_path(manifest_path) as tmp:
            checkpoint_manifest(metrics_paths).to_csv(tmp, sep="\t", index=False)
    return summary
