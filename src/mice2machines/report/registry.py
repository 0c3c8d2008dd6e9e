"""The figure registry: every figure of the report, in one list.

The workflow's rules take their figure outputs from it (`figure_files`), the report rule
renders it in order (`mice2machines.report.html`) and the tests check it. Per-metric figures
follow the metric registry (`mice2machines.compare.registry`): a new metric gets its curves
and heatmap with no edit here. Each figure's ``make`` reads what it needs from `Inputs` and
returns a matplotlib Figure; `Inputs` is the only place that opens files.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import pandas as pd

#: the rule (stage) that draws a figure, and the folder, under results_dir, it writes into
STAGES = {"compare": "compare/figures", "report": "report/figures"}


@dataclasses.dataclass(frozen=True)
class FigureSpec:
    """One registered figure: its file stem, report section and caption file (an .rst of
    workflow/report), the stage that draws it and how (``make(inputs) -> Figure``)."""

    name: str
    stage: str
    section: str
    title: str
    caption: str
    make: Callable
    metric: str | None = None  # drawn only when this metric is among compare.metrics

    def png(self, results: str | Path) -> Path:
        return Path(results) / STAGES[self.stage] / f"{self.name}.png"

    def files(self, results: str | Path) -> list[Path]:
        png = self.png(results)
        return [png, png.with_suffix(".svg")]


class Inputs:
    """What the figures read, opened lazily from the paths given (keys: scores, csv,
    neural, selected, activations, archsim, dg_metrics) with the compare settings ``cfg``
    (fdr_alpha, map_center, map_normalize)."""

    def __init__(self, paths: Mapping, cfg: Mapping | None = None):
        self.paths = dict(paths)
        self.cfg = dict(cfg or {})

    def _path(self, key: str):
        if key not in self.paths:
            raise KeyError(f"figure input {key!r} not given (have: {sorted(self.paths)})")
        return self.paths[key]

    @functools.cached_property
    def scores(self):
        from ..compare.aggregate import open_store

        return open_store(self._path("scores")).load()

    @functools.cached_property
    def tidy(self) -> pd.DataFrame:
        return pd.read_csv(self._path("csv"))

    @functools.cached_property
    def neural(self):
        from ..io import open_zarr

        return open_zarr(self._path("neural")).load()

    @functools.cached_property
    def selected(self) -> pd.DataFrame:
        return pd.read_csv(self._path("selected"), sep="\t")

    @functools.cached_property
    def archsim(self) -> pd.DataFrame:
        return pd.read_csv(self._path("archsim"), sep="\t", index_col=0)

    @functools.cached_property
    def dg(self) -> pd.DataFrame:
        from ..dg.results import collect

        return collect(self._path("dg_metrics"))

    @property
    def fdr_alpha(self) -> float:
        return float(self.cfg.get("fdr_alpha", 0.05))

    @property
    def metrics(self) -> list[str]:
        """The tidy table's metrics, in the metric registry's order."""
        from ..compare.registry import METRICS

        have = list(dict.fromkeys(self.tidy["metric"]))
        return [m for m in METRICS if m in have] + [m for m in have if m not in METRICS]


def _curves(metric):
    from ..compare import figures

    return lambda i: figures.layer_curves(i.tidy, metric, "area", i.fdr_alpha)


def _heatmap(metric):
    from ..compare import figures

    return lambda i: figures.heatmap(i.tidy, metric)


def _examples(i: Inputs):
    from ..compare import figures_cells as fc

    ds = i.scores
    models = [str(m) for m in ds["model"].values]
    trained = [m for m in models if not m.endswith("_random")] or models
    model = trained[0]
    cells = fc.example_cells(ds, model)
    neuron = i.neural["maps"].sel(cell=cells["cell"].values).values
    unit = fc.best_unit_maps(cells, i.neural, Path(i._path("activations")) / f"{model}.zarr", i.cfg)
    labels = [f"{r.cell} {r.area}\n{r.ei_class}" for r in cells.itertuples()]
    units = [f"{model}\n{r.layer}\nunit {r.unit}, RMSE {r.rmse:.2f}" for r in cells.itertuples()]
    return fc.example_maps(neuron, unit, labels, units)


def _reliability(i: Inputs):
    from ..compare import figures_cells as fc

    n = i.neural
    sel = i.selected.set_index("cell").reindex(n["cell"].values)["selected"]
    return fc.reliability_histogram(
        n["reliability"].values, n["area"].values, sel.fillna(False).to_numpy(bool)
    )


def _fixed() -> list[FigureSpec]:
    from ..compare import figures
    from ..compare import figures_cells as fc
    from ..dg import results as dg
    from ..models import archsim

    C, R = "compare", "report"
    return [
        FigureSpec(
            "best_layer",
            C,
            "Summaries",
            "Best layer per area and model",
            "compare_best_layer.rst",
            lambda i: figures.best_layer(i.tidy, i.metrics),
        ),
        FigureSpec(
            "ei",
            C,
            "Summaries",
            "Excitatory versus inhibitory neurons",
            "compare_ei.rst",
            lambda i: figures.ei_profile(i.tidy, i.metrics),
        ),
        FigureSpec(
            "rmse_area",
            C,
            "Receptive fields (paper)",
            "RMSE to the best unit, per area",
            "compare_rmse.rst",
            lambda i: figures.rmse_distributions(i.scores, "area"),
            metric="rf_rmse",
        ),
        FigureSpec(
            "rmse_cre_line",
            C,
            "Receptive fields (paper)",
            "RMSE to the best unit, per Cre line",
            "compare_rmse.rst",
            lambda i: figures.rmse_distributions(i.scores, "cre_line"),
            metric="rf_rmse",
        ),
        FigureSpec(
            "example_maps",
            C,
            "Receptive fields (paper)",
            "Example neurons and their best units",
            "compare_example_maps.rst",
            _examples,
            metric="rf_rmse",
        ),
        FigureSpec(
            "reliability",
            C,
            "Neurons",
            "Response reliability",
            "compare_reliability.rst",
            _reliability,
        ),
        FigureSpec(
            "umap_selection",
            C,
            "Neurons",
            "Neuron selection",
            "compare_umap.rst",
            lambda i: fc.umap_selection(i.selected),
        ),
        FigureSpec(
            "archsim",
            R,
            "Architectures",
            "Architecture similarity",
            "archsim.rst",
            lambda i: archsim.plot_similarity(i.archsim),
        ),
        FigureSpec(
            "dg_accuracy",
            R,
            "Domain generalization",
            "Accuracy per target domain",
            "dg_accuracy.rst",
            lambda i: dg.plot_figure(dg.summarize(i.dg)),
        ),
    ]


def registered(metrics: Sequence[str], dg: bool = True) -> list[FigureSpec]:
    """Every figure of a run with these metrics (in the metric registry's order); the
    receptive-field figures only where rf_rmse is scored, the DG figure only where the run
    trains DG networks."""
    from ..compare.registry import get_metric

    out = []
    for m in metrics:
        desc = get_metric(m).description
        out.append(
            FigureSpec(
                f"curves_{m}",
                "compare",
                f"Metric {m}",
                f"{m} over layer depth, per area — {desc}",
                "compare_curves.rst",
                _curves(m),
                metric=m,
            )
        )
        out.append(
            FigureSpec(
                f"heatmap_{m}",
                "compare",
                f"Metric {m}",
                f"{m}: area x layer",
                "compare_heatmap.rst",
                _heatmap(m),
                metric=m,
            )
        )
    fixed = [s for s in _fixed() if s.metric is None or s.metric in metrics]
    return out + [s for s in fixed if dg or s.name != "dg_accuracy"]


def figure_files(specs: Sequence[FigureSpec], results, stage: str) -> list[str]:
    """PNG and SVG paths of a stage's figures (a rule's outputs)."""
    return [str(f) for s in specs if s.stage == stage for f in s.files(results)]


#: the figures a forked drawing pool works on (its processes inherit them: specs hold lambdas)
_TASKS: list[tuple] = []


def _draw_task(k: int):
    return _draw_one(_TASKS[k])


def _draw_one(args: tuple):
    """Draw and save one figure: (spec, inputs, results, dpi, note) -> (png, seconds)."""
    import time

    from ..compare.figures import save

    spec, inputs, results, dpi, note = args
    t = time.perf_counter()
    save(spec.make(inputs), spec.png(results), dpi=dpi, note=note)
    return spec.png(results), time.perf_counter() - t


def draw(
    specs: Sequence[FigureSpec],
    inputs: Inputs,
    results,
    stage: str,
    dpi: int = 120,
    note: str | None = None,
    workers: int = 1,
):
    """Draw and save (PNG + SVG) the figures of one stage, logging each; returns the PNG
    paths. ``note``: why the scores have no noise ceiling, written on every figure
    (compare.figures.save). ``workers`` > 1 draws in that many forked processes (drawing is
    matplotlib's single-threaded rendering; each process reads the inputs it needs)."""
    import contextlib
    import logging
    import multiprocessing

    log = logging.getLogger("mice2machines")
    todo = [s for s in specs if s.stage == stage]
    args = [(s, inputs, results, dpi, note) for s in todo]
    done = []
    with contextlib.ExitStack() as stack:
        runs = map(_draw_one, args)
        if workers > 1 and len(todo) > 1:
            _TASKS[:] = args
            stack.callback(_TASKS.clear)
            pool = multiprocessing.get_context("fork").Pool(min(workers, len(todo)))
            runs = stack.enter_context(pool).imap(_draw_task, range(len(args)))
        for png, seconds in runs:
            done.append(png)
            log.info("figure %d/%d %s in %.1f s", len(done), len(todo), Path(png).name, seconds)
    return done


def manifest(specs: Sequence[FigureSpec], results) -> str:
    """The registry as JSON (name, section, title, png), for the report and its test."""
    return json.dumps(
        [
            {"name": s.name, "section": s.section, "title": s.title, "png": str(s.png(results))}
            for s in specs
        ],
        indent=1,
    )
