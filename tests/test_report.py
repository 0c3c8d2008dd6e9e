"""The report: figure functions on fabricated tables, the DG table in DomainBed's form, the
figure registry following the metric registry, and the demo's report.html in headless
Chromium (every registered figure's image loaded)."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from mice2machines.compare import figures
from mice2machines.compare.registry import METRICS, Metric, register_metric
from mice2machines.dg.results import domainbed_table
from mice2machines.report import registered
from mice2machines.report.registry import figure_files

AREAS = ["VISp", "VISl", "VISal"]
MODELS = ["net_a", "net_a_random", "net_b"]


def _tidy(metric: str = "rsa_spearman", n_layers: int = 5) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for model in MODELS:
        for area in AREAS:
            for k in range(n_layers):
                s = 0.3 + 0.1 * k + rng.normal(0, 0.02)
                rows.append(
                    {
                        "model": model,
                        "layer": f"l{k}",
                        "layer_index": k,
                        "layer_depth": k / (n_layers - 1),
                        "group_by": "area",
                        "group": f"area:{area}",
                        "group_value": area,
                        "metric": metric,
                        "score": s,
                        "ci_low": s - 0.05,
                        "ci_high": s + 0.05,
                        "null_mean": 0.0,
                        "null_sd": 0.02,
                        "q": 0.01 if k >= 2 else 0.5,
                        "significant": k >= 2,
                        "ceiling": 0.9,
                        "n_cells": 10,
                    }
                )
    return pd.DataFrame(rows)


def test_layer_curves_one_panel_per_area_with_bands_and_markers():
    """Per area a panel; per model a line with error bars; chance and ceiling bands; stars at
    the significant layers; a legend naming every model."""
    df = _tidy()
    fig = figures.layer_curves(df, "rsa_spearman", fdr_alpha=0.05)
    axes = [a for a in fig.axes if a.get_visible()]
    assert [a.get_title().split(" ")[0] for a in axes] == AREAS
    ax = axes[0]
    assert len(ax.containers) == len(MODELS)  # one errorbar container per model
    stars = [c for c in ax.collections if c.get_offsets().shape[0] == 3]
    assert len(stars) == len(MODELS)  # layers 2..4 significant, per model
    ceiling = [p for p in ax.patches if abs(getattr(p, "get_y", lambda: 0)() - 0.89) < 1e-6]
    assert ceiling  # the ceiling band spans 0.9 +- 0.01
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert set(MODELS) <= set(labels) and "q < 0.05" in labels
    assert ax.get_xlabel() == "relative layer depth" and "rsa_spearman" in ax.get_ylabel()


def test_layer_curves_draw_the_inter_animal_ceiling():
    """A dashed line at each area's inter-animal ceiling and a legend entry; none without."""
    df = _tidy("ridge")
    values = {area: 0.5 + 0.05 * i for i, area in enumerate(AREAS)}
    fig = figures.layer_curves(df.assign(ceiling_inter_animal=df.group_value.map(values)), "ridge")
    axes = [a for a in fig.axes if a.get_visible()]
    for ax, area in zip(axes, AREAS, strict=True):
        dashed = [ln.get_ydata()[0] for ln in ax.lines if ln.get_linestyle() == "--"]
        assert dashed == [values[area]]
    assert "inter-animal ceiling" in [t.get_text() for t in fig.legends[0].get_texts()]
    plain = figures.layer_curves(df, "ridge")
    assert "inter-animal ceiling" not in [t.get_text() for t in plain.legends[0].get_texts()]


def test_best_layer_and_ei_are_grids_with_labels():
    """Eight metrics give a 2 x 4 grid (not a strip), every panel with a y label."""
    df = pd.concat([_tidy(m) for m in list(METRICS)[:8]])
    fig = figures.best_layer(df, list(METRICS)[:8])
    w, h = fig.get_size_inches()
    assert w / h < 3 and len([a for a in fig.axes if a.get_visible()]) == 8
    assert all(a.get_ylabel() for a in fig.axes if a.get_visible())
    ei = df.assign(
        group_by="ei_class", group_value=np.where(df.layer_index % 2, "excitatory", "inhibitory")
    )
    fig = figures.ei_profile(ei, list(METRICS)[:8])
    assert all(a.get_ylabel() and a.get_xlabel() for a in fig.axes if a.get_visible())


def _draws_to_save(fig, png, monkeypatch) -> int:
    """How many times `figures.save` (PNG + SVG) draws ``fig``."""
    from matplotlib.figure import Figure

    draws = []
    original = Figure.draw

    def counted(self, renderer):
        draws.append(1)
        return original(self, renderer)

    monkeypatch.setattr(Figure, "draw", counted)
    figures.save(fig, png)
    monkeypatch.undo()
    assert png.with_suffix(".svg").stat().st_size > 0
    return len(draws)


def test_tight_layout_is_applied_once_not_redone_at_every_save(tmp_path, monkeypatch):
    """A laid-out figure keeps no layout engine, so saving PNG + SVG draws it twice, not four
    times, and the subplot parameters are tight_layout's own."""
    df = pd.concat([_tidy(m) for m in list(METRICS)[:8]])
    fig = figures.best_layer(df, list(METRICS)[:8])
    assert fig.get_layout_engine() is None
    ours = {k: getattr(fig.subplotpars, k) for k in ("left", "right", "bottom", "top")}
    assert _draws_to_save(fig, tmp_path / "best.png", monkeypatch) == 2
    ref = figures.best_layer(df, list(METRICS)[:8])
    ref.tight_layout(rect=(0, 0.08, 1, 1))
    assert _draws_to_save(ref, tmp_path / "ref.png", monkeypatch) == 4
    assert ours == pytest.approx(
        {k: getattr(ref.subplotpars, k) for k in ("left", "right", "bottom", "top")}
    )


def _dg_summary(tmp_path) -> pd.DataFrame:
    from mice2machines.dg import results

    paths = []
    for seed, variant, acc in [(0, "baseline", 0.5), (1, "baseline", 0.6)] + [
        (0, "neurn", 0.7),
        (1, "neurn", 0.8),
    ]:
        p = tmp_path / variant / f"seed{seed}" / "metrics.json"
        p.parent.mkdir(parents=True)
        targets = {"svhn": {"acc": acc, "n": 100, "split": "all"}}
        p.write_text(
            json.dumps(
                {"arch": "small_cnn", "variant": variant, "source": "mnist", "seed": seed}
                | {"val_acc": 0.9, "selected_epoch": 1, "targets": targets, "config": {}}
            )
        )
        paths.append(p)
    return results.summarize(results.collect(paths))


@pytest.mark.parametrize("stage", ["archsim", "dg"])
def test_report_stage_figures_are_laid_out_once(stage, tmp_path, monkeypatch):
    """The report stage's own figures (architecture matrix, DG accuracy) draw once a format."""
    if stage == "archsim":
        from mice2machines.models import archsim

        fig = archsim.plot_similarity(archsim.similarity_matrix({"x": "CRM", "y": "CRCRM"}))
    else:
        from mice2machines.dg import results

        fig = results.plot_figure(_dg_summary(tmp_path))
    assert _draws_to_save(fig, tmp_path / f"{stage}.png", monkeypatch) == 2


def test_rmse_distributions_one_panel_per_model():
    """The paper's RMSE figure keeps models (random twins included) apart."""
    rng = np.random.default_rng(1)
    shape = (len(MODELS), 4, 12)
    ds = xr.Dataset(
        {
            v: (("model", "layer", "cell"), rng.uniform(0.5, 1.5, shape))
            for v in ("rf_rmse", "rf_rmse_neurn")
        },
        coords={
            "model": MODELS,
            "layer": [f"l{k}" for k in range(4)],
            "cell": np.arange(12),
            "area": ("cell", np.repeat(AREAS, 4)),
        },
    )
    fig = figures.rmse_distributions(ds, "area")
    titles = [a.get_title() for a in fig.axes if a.get_visible()]
    assert titles == MODELS
    texts = {t.get_text() for a in fig.axes for t in a.texts}
    med = np.median(ds.rf_rmse.sel(model="net_b").min("layer").values[:4])
    assert f"{med:.2f}" in texts


def test_domainbed_table_avg_and_standard_error():
    """Cells are mean +- std/sqrt(n) over seeds; Avg is each seed's mean over non-source
    targets, then mean +- SE; the paired difference row in the same form."""
    rows = []
    for variant, shift in (("baseline", 0.0), ("neurn", 0.1)):
        for seed, acc in enumerate((0.5, 0.6, 0.7)):
            for target, extra in (("src", 0.3), ("t1", 0.0), ("t2", 0.1)):
                rows.append(
                    {
                        "arch": "cnn",
                        "source": "src",
                        "variant": variant,
                        "seed": seed,
                        "target": target,
                        "acc": acc + extra + shift * seed,
                    }
                )
    t = domainbed_table(pd.DataFrame(rows)).set_index("variant")
    se = 10 / math.sqrt(3)  # std of (50, 60, 70) is 10 points
    assert t.loc["baseline", "t1"] == f"60.0 ± {se:.1f}"
    assert t.loc["baseline", "Avg"] == f"65.0 ± {se:.1f}"  # mean of t1, t2 per seed
    assert list(t.columns[:4]) == ["arch", "source", "seeds", "src (source, held out)"]
    d_se = 10 / math.sqrt(3)  # differences 0, 10, 20 points
    assert t.loc["neurn-baseline", "Avg"] == f"10.0 ± {d_se:.1f}"


@pytest.fixture
def toy_metric():
    spec = register_metric(
        Metric("toy_report_metric", "representation", True, "a toy", score=lambda n, m: None)
    )
    yield spec
    METRICS.pop(spec.name)


def test_registry_follows_the_metric_registry(toy_metric, tmp_path):
    """A registered metric gets its curves and heatmap (PNG + SVG) with no other edit."""
    specs = registered(["rsa_spearman", toy_metric.name])
    names = [s.name for s in specs]
    assert {"curves_toy_report_metric", "heatmap_toy_report_metric"} <= set(names)
    assert len(names) == len(set(names))
    files = figure_files(specs, tmp_path, "compare")
    assert str(tmp_path / "compare/figures/curves_toy_report_metric.svg") in files
    assert "dg_accuracy" not in {s.name for s in registered(["ridge"], dg=False)}


def test_demo_figures_drawn_in_parallel_equal_the_serial_ones(demo_run, tmp_path, caplog):
    """compare_figures draws in forked processes (its threads); drawn one by one, with the
    same inputs, every PNG is the same to the byte, and each figure is logged."""
    import logging

    import yaml

    from mice2machines.compare.registry import load_plugins
    from mice2machines.report import Inputs, draw, paths_from_results
    from mice2machines.settings import validate_config
    from mice2machines.workflow_params import job_params

    results = demo_run / "results"
    config = validate_config(yaml.safe_load((demo_run / "config" / "config.yaml").read_text()))
    cfg = json.loads(job_params("compare_figures", config))
    load_plugins(cfg["plugins"])
    specs = [s for s in registered(cfg["metrics"]) if s.stage == "compare"][:4]
    with caplog.at_level(logging.INFO, logger="mice2machines"):
        done = draw(specs, Inputs(paths_from_results(results), cfg), tmp_path, "compare")
    assert [p.name for p in done] == [s.png(results).name for s in specs]
    for spec, png in zip(specs, done, strict=True):
        assert png.read_bytes() == spec.png(results).read_bytes(), spec.name
    logged = [r.getMessage() for r in caplog.records if r.getMessage().startswith("figure ")]
    assert len(logged) == len(specs) and logged[-1].startswith(f"figure {len(specs)}/")
    log = (demo_run / "logs" / "compare" / "figures.log").read_text()
    assert re.search(r"figure \d+/\d+ curves_\w+\.png in [\d.]+ s", log)


CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]

#: appended to a copy of the page: records every image's load state in the DOM
PROBE = """<script>
window.addEventListener('load', () => {
  const figs = [...document.querySelectorAll('figure[data-figure]')].map(f => {
    const img = f.querySelector('img');
    return {name: f.dataset.figure, complete: !!img && img.complete,
            w: img ? img.naturalWidth : 0, h: img ? img.naturalHeight : 0};
  });
  const out = document.createElement('pre');
  out.id = 'probe';
  out.textContent = JSON.stringify({figures: figs, tables: document.querySelectorAll('table').length});
  document.body.appendChild(out);
});
</script>"""


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _browser(exe: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180)


def check_report(html: Path, shots: Path) -> dict:
    """Open the report in headless Chromium: the probe's load states of every figure, and
    screenshots (top of the page and each section) under ``shots``."""
    exe = chromium()
    if exe is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is not installed (make test installs it)")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    shots.mkdir(parents=True, exist_ok=True)
    probe = html.with_name("report_probe.html")
    probe.write_text(html.read_text().replace("</body>", PROBE + "</body>"))
    dom = _browser(
        exe, shots / "profile", "--virtual-time-budget=20000", "--dump-dom", probe.as_uri()
    )
    found = re.search(r"<pre id=\"probe\">(.*?)</pre>", dom.stdout, re.S)
    assert found, dom.stderr[-2000:]
    state = json.loads(found.group(1).replace("&quot;", '"'))
    sections = re.findall(r"<section id='([^']+)'", html.read_text())
    for name in sections:  # one page per section (the others hidden): headless Chromium
        page = html.with_name(f"report_{name}.html")  # paints only the first viewport
        hide = f"<style>nav, section:not(#{name}) {{display: none}}</style></head>"
        page.write_text(html.read_text().replace("</head>", hide, 1))
        shot = shots / f"{name}.png"
        _browser(
            exe,
            shots / "profile",
            "--window-size=1280,2400",
            "--virtual-time-budget=10000",
            f"--screenshot={shot}",
            page.as_uri(),
        )
        assert shot.stat().st_size > 10_000, name
        page.unlink()
    return state


def test_demo_report_in_headless_chromium(demo_run, tmp_path):
    """The demo's report.html shows every registered figure (loaded, non-zero natural size)
    and the DG table; screenshots are kept in the test's tmp folder."""
    res = demo_run / "results"
    html = res / "report.html"
    assert html.stat().st_size > 100_000
    df = pd.read_csv(res / "compare" / "scores.csv")
    metrics = [m for m in METRICS if m in set(df.metric)]
    specs = registered(metrics, dg=(res / "dg" / "table.csv").exists())
    for spec in specs:
        for f in spec.files(res):
            assert f.stat().st_size > 1000, f
    state = check_report(html, tmp_path / "shots")
    got = {f["name"]: f for f in state["figures"]}
    assert set(got) == {s.name for s in specs}
    bad = [n for n, f in got.items() if not (f["complete"] and f["w"] > 100 and f["h"] > 100)]
    assert not bad, bad
    assert state["tables"] >= 1
