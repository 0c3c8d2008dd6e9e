"""The comparison pipeline on small stores: prepare -> select -> per-model job -> aggregate ->
tables and figures; planted truth (neurons copied from a known layer rank it first)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from mice2machines.compare import (  # noqa: E402
    aggregate,
    figures,
    job,
    prepare,
    selection,  # noqa: E402
    settings,
    stream,
)
from mice2machines.io import open_zarr, write_zarr_atomic  # noqa: E402

N_IMG, H, W = 118, 24, 30
PLANTED = "4"  # the max-pool layer of `net()`
LAYERS = ["0", "1", "3", "4", "6", "7"]
CFG = {
    "map_size": [12, 15],
    "n_boot": 40,
    "n_splits": 3,
    "device": "cpu",
    "unit_chunk": 700,
    "selection": {"per_class": 30, "n_clusters": 3, "embedding": "pca"},
    "groups": ["area", "cre_line", "ei_class"],
    "min_cells": 5,
    "n_perm": 99,
    "n_perm_max": 99,
}


class Pre(nn.Module):
    def forward(self, x):
        return x[:, None] / 255.0


def net(seed):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 8, 5, padding=2),
        nn.ReLU(),  # 0, 1
        nn.Conv2d(8, 16, 3, padding=1),
        nn.ReLU(),  # 2, 3
        nn.AdaptiveMaxPool2d(1),  # 4: (16, 1, 1) -- the planted layer
        nn.Flatten(),
        nn.Linear(16, 40),
        nn.ReLU(),  # 5, 6, 7
    )


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    from mice2machines.models.extract import ExtractSettings, extract

    d = tmp_path_factory.mktemp("compare")
    g = np.random.default_rng(0)
    imgs = g.uniform(0, 255, (N_IMG, H, W)).astype(np.float32)
    imgs = (imgs + np.roll(imgs, 1, 2) + np.roll(imgs, 1, 1)) / 3  # some spatial structure
    settings_ = ExtractSettings(device="cpu", batch_size=64, chunk_mb=0.02, writers=2)
    paths = {}
    for name, seed in (("planted_net", 1), ("other_net", 2)):
        paths[name] = d / f"{name}.zarr"
        extract(net(seed), Pre(), imgs, paths[name], LAYERS, settings_)
    with torch.no_grad():
        pool = net(1)[:5](Pre()(torch.from_numpy(imgs))).numpy()[:, :, 0, 0]  # (image, 16)
    # 64 neurons: noisy copies of the planted layer's units, two areas x two Cre lines
    n = 64
    alive = np.flatnonzero(pool.std(0) > 1e-6 * pool.std())
    unit = alive[np.arange(n) % len(alive)]
    z = (pool - pool.mean(0)) / np.where(pool.std(0) > 0, pool.std(0), 1)
    resp = z[:, unit].T[:, :, None] + 1.0 * g.normal(size=(n, N_IMG, 12))
    resp[g.random(resp.shape) < 0.03] = np.nan
    cre = np.where(np.arange(n) % 2, "Sst-IRES-Cre", "Cux2-CreERT2")
    pop = xr.Dataset(
        {"responses": (("cell", "image", "repeat"), resp.astype(np.float32))},
        coords={
            "cell": 5000 + np.arange(n),
            "image": np.arange(N_IMG),
            "experiment_id": ("cell", np.where(np.arange(n) < 32, 1, 2)),
            "area": ("cell", np.where(np.arange(n) < 32, "VISp", "VISal")),
            "cre_line": ("cell", cre),
            "ei_class": ("cell", np.where(cre == "Sst-IRES-Cre", "inhibitory", "excitatory")),
            "imaging_depth": ("cell", np.full(n, 175)),
        },
    )
    stim = xr.Dataset({"images": (("image", "y", "x"), imgs)}, coords={"image": np.arange(N_IMG)})
    return {"pop": pop, "stim": stim, "dir": d, "unit": unit, **paths}


@pytest.fixture(scope="module")
def neural(stores):
    ds = prepare.prepare_neural(stores["pop"], stores["stim"], CFG)
    write_zarr_atomic(ds, stores["dir"] / "neural.zarr")
    return open_zarr(stores["dir"] / "neural.zarr").load()


def test_prepared_store_holds_no_fixed_width_strings(stores, tmp_path):
    """zarr v3 has no spec for numpy's fixed-width strings (other zarr readers may not open
    them): the writer stores the group labels as variable-length strings, same values."""
    import warnings

    from zarr.errors import UnstableSpecificationWarning

    ds = prepare.prepare_neural(stores["pop"], stores["stim"], CFG)
    fixed = [k for k, v in ds.variables.items() if v.dtype.kind == "U"]
    assert fixed  # what the writer has to convert
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnstableSpecificationWarning)
        write_zarr_atomic(ds, tmp_path / "neural.zarr")
    back = open_zarr(tmp_path / "neural.zarr")
    for k in fixed:
        assert [str(x) for x in back[k].values] == [str(x) for x in ds[k].values]


@pytest.fixture(scope="module")
def selected(neural):
    cfg = settings(CFG)
    t = selection.select_neurons(
        neural.maps.values, neural.ei_class.values, neural.cell.values, **cfg["selection"]
    )
    return np.flatnonzero(t.selected.to_numpy())


@pytest.fixture(scope="module")
def results(stores, neural, selected):
    out = {}
    for name in ("planted_net", "other_net"):
        ds = job.compare_model(stores[name], neural, selected, CFG, model=name)
        out[name] = stores["dir"] / "models" / f"{name}.zarr"
        write_zarr_atomic(ds, out[name])
    return out


def test_prepare(neural):
    assert neural.sizes["cell"] == 64
    assert list(neural.group.values) == [
        "all",
        "area:VISal",
        "area:VISp",
        "cre_line:Cux2-CreERT2",
        "cre_line:Sst-IRES-Cre",
        "ei_class:excitatory",
        "ei_class:inhibitory",
    ]
    assert neural.membership.sum("cell").values.tolist() == [64, 32, 32, 32, 32, 32, 32]
    assert neural.maps.shape == (64, 12, 15)
    c = neural.ceiling.sel(group="all")
    assert ((c > 0.5) & (c <= 1.0)).all()


def test_planted_layer_ranks_first_for_every_metric(results, stores):
    ds = open_zarr(results["planted_net"]).load()
    assert list(ds.layer.values) == LAYERS
    for metric in (
        "rsa_spearman",
        "rsa_pearson",
        "cka_unbiased",
        "cka_biased",
        "ridge",
        "match",
        "rf_rmse",
    ):
        s = ds.score.sel(metric=metric, group="all").to_series()
        best = s.idxmin() if metric == "rf_rmse" else s.idxmax()
        assert best == PLANTED, f"{metric}: {s.to_dict()}"
    # bottom-up: the activity distribution of each neuron's best RF unit
    q = ds.rf_unit_activity.sel(layer=PLANTED)
    assert np.isfinite(q).all() and (q.diff("quantile") >= 0).all()
    # matched units of the planted layer are the generating ones
    unit = stores["unit"][ds.cell.values - 5000]
    mu = ds.match_unit.sel(layer=PLANTED).values
    assert (mu == unit[None]).mean() > 0.9
    ok = ds.ci_low.notnull()
    assert ok.sum() > 0.8 * ok.size
    assert ((ds.ci_low <= ds.score + 1e-9) & (ds.score <= ds.ci_high + 1e-9)).where(ok, True).all()
    # NeuRN variant: defined on spatial layers, NaN on flat and 1x1 ones
    rn = ds.score.sel(metric="rf_rmse_neurn", group="all")
    assert np.isfinite(rn.sel(layer=["0", "1", "3"])).all()
    assert rn.sel(layer=["4", "6", "7"]).isnull().all()


def test_chunking_does_not_change_results(stores, neural, selected):
    cfg = {
        **CFG,
        "n_boot": 0,
        "metrics": ["rsa_spearman", "cka_unbiased", "ridge", "match", "rf_rmse"],
    }
    a = job.compare_model(stores["planted_net"], neural, selected, {**cfg, "unit_chunk": 50})
    b = job.compare_model(stores["planted_net"], neural, selected, {**cfg, "unit_chunk": 10**6})
    xr.testing.assert_allclose(a.score, b.score, rtol=1e-4, atol=1e-5)


def test_aggregate_tables_and_figures(results, tmp_path):
    # a third model with fewer layers: layers are the union, NaN where a model has none
    part = open_zarr(results["other_net"]).isel(layer=[0, 3, 5]).load()
    write_zarr_atomic(part, tmp_path / "part.zarr")
    agg = aggregate.aggregate(
        [results["planted_net"], results["other_net"], tmp_path / "part.zarr"],
        ["planted_net", "other_net", "part"],
    )
    assert set(agg.score.dims) == {"metric", "group", "model", "layer"}
    assert agg.score.sel(model="part", layer="1").isnull().all()
    assert int(agg.layer_index.sel(model="part", layer="4")) == 3
    loaded = aggregate.aggregate(
        [results["planted_net"], results["other_net"], tmp_path / "part.zarr"],
        ["planted_net", "other_net", "part"],
        load=True,
    )  # small inputs, in memory: the same store
    xr.testing.assert_identical(loaded.compute(), agg.compute())
    assert loaded.score.chunks == agg.score.chunks
    write_zarr_atomic(agg, tmp_path / "scores.zarr")
    agg = aggregate.open_store(tmp_path / "scores.zarr")
    df = aggregate.tidy(agg)
    assert {
        "model",
        "layer",
        "group",
        "metric",
        "score",
        "ci_low",
        "ci_high",
        "ceiling",
        "score_ceiled",
        "layer_depth",
    } <= set(df.columns)
    # 3 models x 8 metrics x 7 groups x their layers; rf_rmse_neurn NaN where no space (1x1)
    assert len(df) == 8 * 7 * (2 * len(LAYERS) + 3) - 7 * (3 + 3 + 2)
    cells = aggregate.bottom_up(agg)
    assert set(cells.metric) == {"ridge", "match", "rf_rmse", "rf_rmse_neurn"}
    rf_best = cells[(cells.metric == "rf_rmse") & (cells.model == "planted_net")]
    assert (rf_best.best_layer == PLANTED).mean() > 0.8  # bottom-up: best layer per neuron
    outputs = {
        "heatmap:rsa_spearman": tmp_path / "h.png",
        "heatmap:rf_rmse": tmp_path / "r.png",
        "best_layer": tmp_path / "b.png",
        "ei": tmp_path / "e.png",
        "rmse_area": tmp_path / "ra.png",
        "rmse_cre_line": tmp_path / "rc.png",
    }
    figures.save_all(agg.load(), df, outputs, dpi=40)
    assert all(p.stat().st_size > 1000 for p in outputs.values())
    t = figures.rmse_table(agg.load())
    assert set(t.variant) == {"feature maps", "NeuRN + feature maps"}


def test_inter_animal_ceiling_beside_the_ridge_ceiling(results, neural):
    """The two experiments are two mice: groups holding both have an inter-animal ridge
    ceiling, the areas (one mouse each) none; it reaches the tidy table and the curves, and,
    both mice copying the planted layer's units, it reaches the planted layer's score."""
    ia = neural.ceiling_inter_animal.sel(mapping="ridge").to_series()
    assert ia[["area:VISal", "area:VISp"]].isna().all()
    assert ia.drop(["area:VISal", "area:VISp"]).notna().all()
    assert neural.inter_animal_n_mice.sel(mapping="ridge", group="all") == 2
    agg = aggregate.aggregate(list(results.values()), list(results))
    df = aggregate.tidy(agg)
    ridge = df[df.metric == "ridge"]
    for group, rows in ridge.groupby("group"):
        np.testing.assert_array_equal(rows.ceiling_inter_animal, ia[group])
    assert df[df.metric != "ridge"].ceiling_inter_animal.isna().all()
    assert list(df.columns).index("ceiling_inter_animal") == list(df.columns).index("ceiling") + 1
    planted = ridge[(ridge.model == "planted_net") & (ridge.group == "all")].score.max()
    assert ia["all"] >= planted - 0.05, (ia["all"], planted)
    assert ia["all"] <= ridge[ridge.group == "all"].ceiling.iloc[0] + 0.02
    fig = figures.layer_curves(df, "ridge", "cre_line")
    dashed = [ln for ax in fig.axes for ln in ax.lines if ln.get_linestyle() == "--"]
    want = sorted(ia[["cre_line:Cux2-CreERT2", "cre_line:Sst-IRES-Cre"]])
    assert sorted(float(ln.get_ydata()[0]) for ln in dashed) == pytest.approx(want)


def test_unit_chunks_follow_store_chunks(tmp_path):
    """A layer chunked along channels streams in blocks of about unit_chunk units."""
    path = tmp_path / "m.zarr"
    g = np.random.default_rng(0)
    xr.Dataset(
        {"activations": (("image", "channel", "y", "x"), g.normal(size=(10, 3, 2, 2)))}
    ).chunk({"channel": 1}).to_zarr(path, group="a", mode="w", consolidated=False)
    da = open_zarr(path, group="a")["activations"]
    chunks = list(stream.iter_unit_chunks(da, unit_chunk=8))
    assert [s for s, _ in chunks] == [0, 8] and chunks[0][1].shape == (10, 2, 2, 2)
    np.testing.assert_allclose(np.concatenate([c for _, c in chunks], 1), da.values, rtol=1e-6)


def test_settings_merge():
    cfg = settings({"selection": {"per_class": 7}, "n_boot": 3})
    assert cfg["selection"]["per_class"] == 7 and cfg["selection"]["n_clusters"] == 10
    assert cfg["n_boot"] == 3 and cfg["metrics"][0] == "rsa_spearman"
    groups = prepare.neural_groups(pd.DataFrame({"area": ["VISp"] * 3 + ["VISl"]}), ["area"], 2)
    assert list(groups.group) == ["all", "area:VISp"]


@pytest.mark.workflow
def test_demo_comparison_outputs(demo_run):
    """The demo run (conftest.demo_run) made the aggregated store, tables and figures."""
    import yaml
    from conftest import ROOT

    cfg = settings(yaml.safe_load((ROOT / "config" / "config.yaml").read_text())["compare"])
    res = demo_run / "results" / "compare"
    ds = aggregate.open_store(res / "scores.zarr")
    assert set(ds.metric.values) == set(cfg["metrics"])
    assert {f"area:{a}" for a in ("VISp", "VISl", "VISal", "VISpm", "VISam", "VISrl")} <= set(
        ds.group.values
    )
    assert ds.sizes["model"] >= 2 and "provenance" in ds.attrs
    df = pd.read_csv(res / "scores.csv")
    assert set(df.metric) == set(cfg["metrics"]) and df.score.notna().all()
    assert (df.ceiling.dropna().between(-1, 1)).all()
    cells = pd.read_csv(res / "cells.csv")
    assert {"rf_rmse", "rf_rmse_neurn", "ridge", "match"} <= set(cells.metric)
    sel = pd.read_csv(res / "selected_neurons.tsv", sep="\t")
    counts = sel[sel.selected].groupby("ei_class").size()
    assert counts["excitatory"] == counts["inhibitory"] > 0  # balanced E/I
    for name in [f"heatmap_{m}" for m in cfg["metrics"]] + [
        "best_layer",
        "ei",
        "rmse_area",
        "rmse_cre_line",
    ]:
        assert (res / "figures" / f"{name}.png").stat().st_size > 1000
    log = (demo_run / "logs" / "compare" / "model").glob("*.log")
    assert all("layer" in p.read_text() for p in log)  # a progress line per layer


def test_example_unit_maps_read_one_unit_of_a_flat_layer(stores, neural):
    """The example figure's unit maps: a flat layer's unit read alone (not the whole layer:
    it can be 10^6 wide) gives the map of that column of the whole layer."""
    from mice2machines.compare import figures_cells as fc
    from mice2machines.compare import receptive_fields as rf
    from mice2machines.models.store import open_layer

    cells = pd.DataFrame({"layer": ["7", "7"], "unit": [3, 39]})
    cfg = settings(CFG)
    got = fc.best_unit_maps(cells, neural, stores["planted_net"], cfg)
    X = open_layer(stores["planted_net"], "7").sel(image=neural["image"].values).values
    F = neural["stimulus_matrix"].values
    maps = rf.unit_maps(
        X[:, [3, 39]], F.reshape(len(F), -1), cfg["map_center"], cfg["map_normalize"]
    )
    np.testing.assert_allclose(got, maps.reshape(got.shape), rtol=1e-12)


@pytest.mark.parametrize("remove", [True, False])
def test_rsa_mean_pattern_option(stores, neural, selected, remove):
    """RSA scores and RSA ceilings follow compare.rsa_remove_mean_pattern, on both sides."""
    from mice2machines import similarity as sim
    from mice2machines.models.store import open_layer

    cfg = {
        **CFG,
        "n_boot": 0,
        "metrics": ["rsa_spearman", "rsa_pearson"],
        "rsa_remove_mean_pattern": remove,
    }
    ds = job.compare_model(stores["planted_net"], neural, selected, cfg)
    assert ds.attrs["rsa_remove_mean_pattern"] == int(remove)
    R = np.asarray(neural.responses.values, dtype=np.float64).T  # (image, cell), every cell

    def centred(x):
        return x - x.mean(0) if remove else x

    for layer in ("1", "4", "7"):
        X = np.asarray(open_layer(stores["planted_net"], layer).values, dtype=np.float64)
        X = X.reshape(len(X), -1)
        want = sim.rsa(sim.rdm(centred(R)), sim.rdm(centred(X)), method="spearman")
        got = float(ds.score.sel(metric="rsa_spearman", group="all", layer=layer))
        assert got == pytest.approx(want, abs=1e-6)
    n = prepare.prepare_neural(stores["pop"], stores["stim"], {**cfg})
    other = prepare.prepare_neural(
        stores["pop"], stores["stim"], {**cfg, "rsa_remove_mean_pattern": not remove}
    )
    a = n.ceiling.sel(metric="rsa_pearson").values
    b = other.ceiling.sel(metric="rsa_pearson").values
    assert np.isfinite(a).all() and not np.allclose(a, b)
    xr.testing.assert_equal(
        n.ceiling.sel(metric="cka_unbiased"), other.ceiling.sel(metric="cka_unbiased")
    )


TOY = '''
"""A toy metric: Pearson r of the neural and model Gram matrices' upper triangles."""
import numpy as np

from mice2machines.compare.registry import Metric, register_metric


def score(neural, model):
    i, j = np.triu_indices(neural.grams.shape[-1], k=1)
    a, b = neural.grams[:, i, j], model.grams[:, i, j]
    a = (a - a.mean(1, keepdims=True)) / a.std(1, keepdims=True)
    b = (b - b.mean(1, keepdims=True)) / b.std(1, keepdims=True)
    return a @ b.T / a.shape[1]


register_metric(
    Metric("toy_gram_r", "representation", True, "toy: r of the Gram triangles", score=score,
           ceiling="split_half")
)
'''


@pytest.fixture
def toy_plugin(tmp_path):
    """A metric added by one module of its own (compare.plugins), removed afterwards."""
    import sys

    from mice2machines.compare.registry import METRICS

    path = tmp_path / "toy_metric.py"
    path.write_text(TOY)
    yield str(path)
    METRICS.pop("toy_gram_r", None)
    sys.modules.pop("m2m_plugin_toy_metric", None)


def test_metric_added_by_one_module(toy_plugin, stores, selected, tmp_path):
    """A plugin module alone puts its metric into the schema's allowed values, the per-model
    store, the aggregated store, the tidy CSV and the figures."""
    from mice2machines.settings import ConfigError, schema

    with pytest.raises(ConfigError, match=r"compare\.metrics\.1: 'toy_gram_r' is not one of"):
        settings({"metrics": ["rsa_spearman", "toy_gram_r"]})
    cfg = {**CFG, "plugins": [toy_plugin], "metrics": ["rsa_spearman", "toy_gram_r"]}
    assert "toy_gram_r" in schema("compare", cfg)["properties"]["metrics"]["items"]["enum"]
    assert settings(cfg)["metrics"] == ["rsa_spearman", "toy_gram_r"]

    neural_ = prepare.prepare_neural(stores["pop"], stores["stim"], cfg)
    assert np.isfinite(neural_.ceiling.sel(metric="toy_gram_r").values).all()
    ds = job.compare_model(stores["planted_net"], neural_, selected, cfg, model="planted_net")
    toy = ds.score.sel(metric="toy_gram_r")
    assert np.isfinite(toy.values).all() and np.isfinite(ds.ci_low.sel(metric="toy_gram_r")).all()
    write_zarr_atomic(ds, tmp_path / "m.zarr")
    agg = aggregate.aggregate([tmp_path / "m.zarr"], ["planted_net"])
    df = aggregate.tidy(agg)
    rows = df[df.metric == "toy_gram_r"]
    assert len(rows) == len(LAYERS) * ds.sizes["group"] and rows.score_ceiled.notna().all()
    df.to_csv(tmp_path / "scores.csv", index=False)
    assert "toy_gram_r" in set(pd.read_csv(tmp_path / "scores.csv").metric)
    out = {"heatmap:toy_gram_r": tmp_path / "h.png", "best_layer": tmp_path / "b.png"}
    figures.save_all(agg.load(), df, out, dpi=40)
    assert all(p.stat().st_size > 1000 for p in out.values())


@pytest.mark.slow
def test_planted_layer_is_significant_for_every_metric(stores, neural, selected):
    """Power: with enough permutations the planted layer passes q < 0.01 for every metric
    (rf_rmse_neurn has no value there: NeuRN needs space, the planted layer is 1 x 1)."""
    metrics = ["rsa_spearman", "rsa_pearson", "cka_unbiased", "cka_biased", "ridge", "match"]
    cfg = {**CFG, "n_boot": 0, "n_perm": 299, "n_perm_max": 199}
    cfg["metrics"] = metrics + ["rf_rmse", "rf_rmse_neurn"]
    ds = job.compare_model(stores["planted_net"], neural, selected, cfg, model="planted_net")
    assert np.isnan(ds.score.sel(metric="rf_rmse_neurn", layer=PLANTED)).all()
    ds = ds.sel(metric=metrics + ["rf_rmse"])
    q = ds.q.sel(group="all", layer=PLANTED)
    assert (q < 0.01).all(), q.to_series()
    assert (ds.p.sel(group="all", layer=PLANTED) <= 1 / 200 + 1e-12).all()
    best = ds.score.sel(group="all").idxmax("layer").where(~ds.metric.str.startswith("rf_"))
    assert (best.dropna("metric") == PLANTED).all(), best.values
    z = ds.z.sel(group="all", layer=PLANTED)
    assert (z > 3).all(), z.to_series()


def _null_population(stores, seed: int) -> xr.Dataset:
    """The planted population's shape and labels, responses independent of the images."""
    pop = stores["pop"]
    g = np.random.default_rng(100 + seed)
    resp = g.normal(size=pop.responses.shape).astype(np.float32)
    return pop.assign(responses=(pop.responses.dims, resp))


@pytest.mark.slow
def test_null_data_scores_at_chance_and_calibrated_tests(stores):
    """No image-locked signal: scores average to chance (null-corrected RF-RMSE to 0),
    uncorrected tests reject at their level, FDR discoveries stay rare."""
    # p <= 0.05 is exactly a 5 % test with 39 (2/40) and 19 (1/20) permutations
    cfg = {**CFG, "n_boot": 0, "n_perm": 39, "n_perm_max": 19, "cell_metrics_on": "all"}
    scores, reject, found = {}, {}, {}
    for seed in range(8):
        pop = _null_population(stores, seed)
        neural_ = prepare.prepare_neural(pop, stores["stim"], cfg)
        sel = np.arange(neural_.sizes["cell"])
        ds = job.compare_model(stores["other_net"], neural_, sel, {**cfg, "seed": seed})
        for m in ds.metric.values:
            s = ds.score_corrected if str(m).startswith("rf_") else ds.score
            v = s.sel(metric=m).values.ravel()
            p = ds.p.sel(metric=m).values.ravel()
            q = ds.q.sel(metric=m).values.ravel()
            ok = np.isfinite(p)
            scores.setdefault(m, []).append(v[np.isfinite(v)])
            reject.setdefault(m, []).append(p[ok] <= 0.05)
            found.setdefault(m, []).append(q[ok] < 0.05)
    for m in ("rsa_spearman", "rsa_pearson", "cka_unbiased", "ridge", "match", "rf_rmse"):
        assert abs(np.mean(np.concatenate(scores[m]))) < 0.02, (m, np.mean(scores[m]))
    exact = [m for m in reject if not str(m).startswith("rf_")]
    allp = np.concatenate([np.concatenate(reject[m]) for m in exact])
    assert abs(allp.mean() - 0.05) < 0.02, allp.mean()
    for m in reject:  # every test valid (RF-RMSE's rate over many seeds: the next test)
        assert np.concatenate(reject[m]).mean() < 0.12, m
    allq = np.concatenate([np.concatenate(found[m]) for m in found])
    assert allq.mean() <= 0.01, allq.mean()


@pytest.mark.slow
def test_rf_rmse_null_calibrated_over_many_seeds(stores):
    """RF-RMSE's max-over-units null, through the job on data without signal: over 30 seeds
    the group and per-cell tests reject at 5 % (the 8 seeds above are too few for a rate) and
    the null-corrected score averages 0, with and without NeuRN."""
    cfg = {**CFG, "n_boot": 0, "n_perm": 19, "n_perm_max": 19, "cell_metrics_on": "all"}
    cfg["metrics"] = ["rf_rmse", "rf_rmse_neurn"]
    group, cell, corrected = {}, {}, {}
    for seed in range(30):
        neural_ = prepare.prepare_neural(_null_population(stores, seed), stores["stim"], cfg)
        sel = np.arange(neural_.sizes["cell"])
        ds = job.compare_model(stores["other_net"], neural_, sel, {**cfg, "seed": seed})
        for m in cfg["metrics"]:
            p = ds.p.sel(metric=m).values.ravel()
            group.setdefault(m, []).append(p[np.isfinite(p)] <= 0.05)
            pc = ds[f"{m}_p"].values.ravel()
            cell.setdefault(m, []).append(pc[np.isfinite(pc)] <= 0.05)
            corrected.setdefault(m, []).append(ds.score_corrected.sel(metric=m).values.ravel())
    for m in cfg["metrics"]:
        g, c = np.concatenate(group[m]), np.concatenate(cell[m])
        assert len(g) > 500 and len(c) > 5000, (m, len(g), len(c))
        assert abs(g.mean() - 0.05) < 0.02, (m, g.mean())
        assert abs(c.mean() - 0.05) < 0.01, (m, c.mean())
        assert abs(np.nanmean(np.concatenate(corrected[m]))) < 0.02, m


def test_new_rsa_metrics_and_rsr_in_the_job(stores, neural, selected):
    """Other RDM distances (crossnobis from the prepared store's repeats) and comparators,
    and the per-model RSR, through the job: the
    planted layer wins each RSA metric at the smallest p; RSR (one score per model, over
    all layers) is significant; intervals, ceilings (none for RSR) as the registry says.
    (Kendall's tau-a loops over permutations: tested at package level, test_rdm_methods.)"""
    rsa_ = ["rsa_euclidean_pearson", "rsa_rho_a", "rsa_cosine_cov", "rsa_euclidean_corr_cov"]
    rsa_ += ["rsa_crossnobis_pearson", "rsa_crossnobis_corr_cov"]
    assert neural.rdm_crossnobis.shape == (neural.sizes["group"], N_IMG, N_IMG)
    cfg = {**CFG, "metrics": [*rsa_, "rsr"], "n_boot": 10, "n_perm": 99}
    ds = job.compare_model(stores["planted_net"], neural, selected, cfg, model="planted_net")
    all_ = ds.sel(group="all")
    best = all_.score.sel(metric=rsa_).idxmax("layer")
    assert (best == PLANTED).all(), best.values
    assert (all_.p.sel(metric=rsa_, layer=PLANTED) == 0.01).all()
    assert np.isfinite(all_.ceiling.sel(metric=rsa_)).all()
    assert np.isfinite(ds.ci_low.sel(metric=rsa_)).all()
    rsr = ds.sel(metric="rsr")
    assert (rsr.score == rsr.score.isel(layer=0)).all() and np.isnan(rsr.ceiling).all()
    assert float(rsr.score.sel(group="all")[0]) > 0.2
    assert (rsr.p.sel(group="all") == 0.01).all() and np.isfinite(rsr.ci_low).all()


def test_pls_and_projected_ridge_rank_the_planted_layer_first(stores, neural, selected):
    """PLS and ridge on randomly projected layers find the planted layer like ridge does; the
    streamed projection is scikit-learn's SparseRandomProjection of the whole layer."""
    from sklearn.random_projection import SparseRandomProjection

    from mice2machines.models.store import open_layer

    rp = {"enabled": True, "eps": 0.1, "n_components": 600}
    cfg = {**CFG, "n_boot": 0, "n_perm": 99, "n_perm_max": 99, "metrics": ["ridge", "pls"]}
    cfg = {**cfg, "random_projection": rp, "pls_components": 10}
    ds = job.compare_model(stores["planted_net"], neural, selected, cfg, model="planted_net")
    best = ds.score.sel(group="all").idxmax("layer")
    assert (best == PLANTED).all(), best.values
    assert (ds.q.sel(group="all", layer=PLANTED) < 0.05).all()
    j = job.open_job(neural, selected, settings(cfg), "planted_net")
    layer = stream.stream_layer(j, stores["planted_net"], "1", "(1/1)")
    X = np.asarray(open_layer(stores["planted_net"], "1").values, dtype=np.float32)
    X = X.reshape(len(X), -1)
    P = SparseRandomProjection(600, random_state=settings(cfg)["seed"])
    P = P.fit_transform(X.astype(np.float64))
    P -= P.mean(0)
    assert layer.mapping_units == 600
    np.testing.assert_allclose(layer.mapping, P @ P.T, rtol=1e-9, atol=1e-9 * np.abs(P).max())
    plain = stream.stream_layer(j, stores["planted_net"], PLANTED, "(1/1)")
    assert plain.mapping_units is None and plain.mapping is plain.gram  # 16 units: as they are
