"""Inter-animal consistency ceilings: equal to a scikit-learn loop, above the planted layer's
score and below the split-half ceiling where the mice differ, at chance without shared
signal; the `mouse` coordinate from every source."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from conftest import real_fixtures

from mice2machines import settings
from mice2machines.compare import prepare
from mice2machines.compare.crossval import kfold, pearson_cols
from mice2machines.compare.interanimal import (
    held_out_scores,
    inter_animal_ceilings,
    linear_gram,
    ridge_mapping,
)
from mice2machines.compare.ridge import RELATIVE_ALPHAS, ridge_fold_scores
from mice2machines.neural import labels
from mice2machines.neural.reliability import cell_reliability
from mice2machines.synthetic.cells import mouse_component
from mice2machines.synthetic.drive import layer_rates


def planted(share, n_mice=4, cells=40, n=118, units=60, rank=8, reps=20, seed=0):
    """A rank-`rank` layer (n, units) and Poisson responses (cells, n, reps) of `n_mice` mice
    whose neurons each copy one layer unit (the generator's `layer_rates`), with `share` of
    each neuron's drive its mouse's own component (`mouse_component`)."""
    rng = np.random.default_rng(seed)
    layer = rng.normal(size=(n, rank)) @ rng.normal(size=(rank, units))
    resp, mice = [], []
    for m in range(n_mice):
        table = pd.DataFrame(
            {
                "peak_rate_hz": rng.lognormal(np.log(15), 0.3, cells),
                "baseline_rate_hz": rng.uniform(0.5, 2, cells),
            }
        )
        own = mouse_component(str(m), cells, n, 3, seed, rng)
        rates = layer_rates(layer, table, rng, own=own, share=share)
        resp.append(rng.poisson(rates[..., None] * 0.25, size=(cells, n, reps)).astype(float))
        mice += [f"60000{m}"] * cells
    return layer, np.concatenate(resp), np.array(mice)


def scores_of(share, **kw):
    """(inter-animal ceiling, the planted layer's median ridge score, median split-half
    reliability) of one planted population, one group of all cells."""
    layer, resp, mice = planted(share, **kw)
    means, folds = resp.mean(-1), kfold(resp.shape[1], 5, 0)
    mapping = ridge_mapping(RELATIVE_ALPHAS)
    ia = inter_animal_ceilings(means, mice, {"all": np.arange(len(mice))}, mapping, folds)
    model = ridge_fold_scores(linear_gram(layer), means.T, RELATIVE_ALPHAS, folds)["score"]
    return (
        float(ia["ceiling"][0]),
        float(np.median(model)),
        float(np.median(cell_reliability(resp))),
    )


def test_held_out_scores_equal_a_ridgecv_loop():
    from sklearn.linear_model import RidgeCV

    rng = np.random.default_rng(4)
    n, latent = 60, rng.normal(size=(60, 5))
    mice = np.repeat(["a", "b", "c"], [9, 12, 7])
    means = latent @ rng.normal(size=(5, len(mice))) + rng.normal(size=(n, len(mice)))
    means = means.T
    folds = kfold(n, 5, seed=1)
    rel = 10.0 ** np.arange(-3, 4)
    got, reason = held_out_scores(means, mice, np.arange(len(mice)), ridge_mapping(rel), folds, 5)
    assert reason == "" and sorted(got) == ["a", "b", "c"]
    for mouse, score in got.items():
        X, Y = means[mice != mouse].T, means[mice == mouse].T
        fold_r = []
        for tr, te in folds:
            Xt = X[tr] - X[tr].mean(0)
            scale = (Xt * Xt).sum() / len(tr)
            fit = RidgeCV(alphas=rel * scale, alpha_per_target=True).fit(X[tr], Y[tr])
            fold_r.append(pearson_cols(fit.predict(X[te]), Y[te]))
        np.testing.assert_allclose(score, np.mean(fold_r, 0), atol=1e-8)
    out = inter_animal_ceilings(
        means, mice, {"all": np.arange(len(mice))}, ridge_mapping(rel), folds, 5
    )
    np.testing.assert_allclose(out["ceiling"], [np.median(np.concatenate(list(got.values())))])
    assert out["n_mice"].tolist() == [3] and 0.3 < out["ceiling"][0] < 1


def test_groups_without_two_mice_get_nan_and_a_reason():
    rng = np.random.default_rng(0)
    means = rng.normal(size=(20, 30))
    mice = np.repeat(["a", "b"], [16, 4])
    groups = {"all": np.arange(20), "one": np.arange(10)}
    out = inter_animal_ceilings(means, mice, groups, ridge_mapping([1.0]), kfold(30, 3), 5)
    assert np.isnan(out["ceiling"]).all() and out["n_mice"].tolist() == [0, 0]
    assert out["reason"].tolist() == [
        "1 of 2 mice with >= 5 cells (an inter-animal ceiling needs 2)",
        "1 of 1 mice with >= 5 cells (an inter-animal ceiling needs 2)",
    ]


@pytest.mark.parametrize("share", [0.0, 0.3])
def test_planted_ceiling_above_the_layer_below_split_half(share):
    ceiling, layer, split_half = scores_of(share)
    assert layer > 0.5
    assert ceiling >= layer - 0.05, (ceiling, layer)
    assert ceiling <= split_half + 0.02, (ceiling, split_half)
    if share > 0:  # the mice differ: the other mice explain less than a mouse's own repeats
        assert ceiling < split_half - 0.15, (ceiling, split_half)


def test_no_shared_signal_ceiling_at_chance():
    ceiling, layer, split_half = scores_of(1.0)
    assert abs(ceiling) < 0.06 and abs(layer) < 0.08, (ceiling, layer)
    assert split_half > 0.8  # each mouse is reliable, just not like the others


def test_mouse_component_shared_within_a_mouse_only():
    rng = np.random.default_rng(0)
    a1 = mouse_component("600001", 30, 118, 2, 7, rng)
    a2 = mouse_component("600001", 30, 118, 2, 7, rng)  # another experiment of that mouse
    b = mouse_component("600002", 30, 118, 2, 7, rng)
    span = np.linalg.svd(a1, full_matrices=False)[2][:2]  # the mouse's 2 image patterns
    resid = lambda x: np.linalg.norm(x - x @ span.T @ span) / np.linalg.norm(x)  # noqa: E731
    assert resid(a2) < 1e-8 and resid(b) > 0.9
    np.testing.assert_allclose(a1.mean(1), 0, atol=1e-12)
    np.testing.assert_allclose(a1.std(1), 1, atol=1e-12)


def test_mouse_from_specimen_names():
    assert labels.mouse_from_specimen_name("Cux2-CreERT2;Camk2a-tTA;Ai93-222426") == "222426"
    assert labels.mouse_from_specimen_name(b"Fezf2-CreER;Ai148-351315") == "351315"
    assert labels.mouse_from_specimen_name("") is None
    assert labels.mouse_from_specimen_name("no-number-here") is None
    assert labels.mouse_from_specimen_name("Slc17a7-IRES2-Cre;Ai93-356790.0") == "356790"
    real = real_fixtures()
    if real is None:
        pytest.skip("real Allen metadata (shared/data/allen) not available")
    pairs = json.loads((real / "specimen_genotypes.json").read_text())
    assert all(labels.mouse_from_specimen_name(name) for name, _ in pairs)
    containers = json.loads(
        (real / "brain_observatory_cache" / "experiment_containers.json").read_text()
    )
    for c in containers:  # the donor's external name is the specimen name's tail
        donor = c["specimen"]["donor"]["external_donor_name"]
        assert labels.mouse_from_specimen_name(c["specimen"]["name"]) == donor
    assert len({c["specimen"]["donor"]["external_donor_name"] for c in containers}) == 105


def test_prepare_stores_the_inter_animal_ceiling(tmp_path):
    from mice2machines.io import open_zarr, write_zarr_atomic

    layer, resp, mice = planted(0.3, n_mice=3, cells=12, n=40, reps=6)
    area = np.where(np.isin(mice, ["600000", "600001"]), "VISp", "VISl")
    pop = xr.Dataset(
        {"responses": (("cell", "image", "repeat"), resp.astype(np.float32))},
        coords={
            "cell": np.arange(len(mice)),
            "image": np.arange(40),
            "mouse": ("cell", mice),
            "area": ("cell", area),
            "experiment_id": ("cell", np.zeros(len(mice), dtype=np.int64)),
        },
    )
    stimuli = xr.Dataset(
        {"images": (("image", "y", "x"), np.random.default_rng(0).uniform(0, 255, (40, 6, 8)))},
        coords={"image": np.arange(40)},
    )
    cfg = {"groups": ["area"], "n_splits": 2, "inter_animal_min_cells": 5}
    write_zarr_atomic(prepare.prepare_neural(pop, stimuli, cfg), tmp_path / "neural.zarr")
    ds = open_zarr(tmp_path / "neural.zarr").load()
    ia = ds["ceiling_inter_animal"].sel(mapping="ridge")
    assert ds["ceiling_inter_animal"].dims == ("mapping", "group")
    assert ds["ceiling_inter_animal"].attrs["long_name"].startswith("inter-animal")
    assert ds["ceiling_inter_animal"].attrs["units"] == "1"
    assert ds["mouse"].values.tolist() == mice.tolist()
    assert ds["inter_animal_n_mice"].sel(mapping="ridge").values.tolist() == [3, 0, 2]
    assert np.isfinite(ia.sel(group=["all", "area:VISp"])).all()
    assert np.isnan(ia.sel(group="area:VISl"))
    assert "needs 2" in str(
        ds["inter_animal_reason"].sel(mapping="ridge", group="area:VISl").values
    )
    folds = kfold(40, 5, 0)  # compare.n_folds, compare.seed
    direct = inter_animal_ceilings(
        ds["responses"].values,
        mice,
        {"p": np.flatnonzero(area == "VISp")},
        ridge_mapping(RELATIVE_ALPHAS),
        folds,
        5,
    )
    np.testing.assert_allclose(ia.sel(group="area:VISp"), direct["ceiling"][0], atol=1e-6)
    per_mouse = prepare.prepare_neural(pop, stimuli, {**cfg, "groups": ["mouse"]})
    assert per_mouse["group"].values.tolist() == ["all"] + [f"mouse:{m}" for m in sorted(set(mice))]
    assert settings.section("compare", {"groups": ["mouse", "area"]})["groups"][0] == "mouse"
    off = prepare.prepare_neural(pop, stimuli, {**cfg, "inter_animal": False})
    assert np.isnan(off["ceiling_inter_animal"]).all()
    assert set(off["inter_animal_reason"].values.ravel()) == {"compare.inter_animal is off"}


def test_synthetic_mice_per_combination(tmp_path, small_cfg):
    from mice2machines import synthetic
    from mice2machines.neural.nwb import read_session

    cfg = {**small_cfg, "experiments_per_combination": 4, "mice": {"per_combination": 2}}
    table = synthetic.write_manifest(tmp_path / "manifest.tsv", cfg)
    per_combo = table.groupby(["area", "cre_line"])["mouse"].nunique()
    assert (per_combo == 2).all() and table["mouse"].nunique() == 2 * len(per_combo)
    first = table[(table.area == "VISp") & (table.cre_line == "Cux2-CreERT2")]
    assert first["mouse"].tolist() == ["600000", "600001", "600000", "600001"]
    synthetic.write_template(tmp_path / "template.npy", cfg)
    cfg["mice"] = {"per_combination": 2, "share": 0.5, "dims": 2}
    eid = int(first.experiment_id.iloc[2])
    nwb = tmp_path / f"{eid}.nwb"
    cells = tmp_path / f"{eid}_cells.tsv"
    synthetic.write_session(
        tmp_path / "template.npy", tmp_path / "manifest.tsv", eid, nwb, cells, cfg
    )
    assert read_session(nwb).mouse == "600000"
    assert set(pd.read_csv(cells, sep="\t", dtype={"mouse": str})["mouse"]) == {"600000"}


def test_table_mouse_coordinate(tmp_path):
    from mice2machines.neural import table

    n = 6
    ds = xr.Dataset(
        {"responses": (("cell", "image"), np.arange(n * 4.0).reshape(n, 4))},
        coords={
            "area": ("cell", ["VISp"] * n),
            "cre_line": ("cell", ["Cux2-CreERT2"] * n),
            "experiment_id": ("cell", [1, 1, 1, 2, 2, 2]),
        },
    )
    out = table.normalise(ds, tmp_path / "t.zarr")
    assert out["mouse"].values.tolist() == ["experiment-1"] * 3 + ["experiment-2"] * 3
    given = table.normalise(ds.assign_coords(mouse=("cell", list("aabbcc"))), "t.zarr")
    assert given["mouse"].values.tolist() == list("aabbcc")


def test_dandi_mouse_from_the_notes_else_the_subject_id():
    import datetime

    from pynwb import NWBFile
    from pynwb.file import Subject

    from mice2machines.neural import nwb2

    def identity(notes):
        f = NWBFile(
            session_description="s",
            identifier="i",
            session_start_time=datetime.datetime(2017, 5, 31, tzinfo=datetime.UTC),
            session_id="501574836-StimB",
            notes=notes,
            subject=Subject(subject_id="559019102", species="Mus musculus"),
        )
        return nwb2._identity(f, "x.nwb")

    donor = "Container ID: 5\nMouse ID (from genotype white paper): 222426\nSession type: x"
    assert identity(donor)["mouse"] == "222426"
    assert identity("Container ID: 5")["mouse"] == "559019102"


@pytest.mark.parametrize("share", [0.0, 1.0])
def test_planted_mice_through_nwb_files(tmp_path, small_cfg, share):
    """Synthetic sessions of 4 mice (files, stores, population, prepare): with no mouse of
    its own the other mice predict a mouse; with only its own, they do not, though each
    mouse's neurons are as reliable."""
    from mice2machines import synthetic
    from mice2machines.io import open_zarr
    from mice2machines.neural import convert as neural
    from mice2machines.neural import population
    from mice2machines.neural.nwb import read_session

    cfg = {
        **small_cfg,
        "areas": ["VISp"],
        "cre_lines": ["Cux2-CreERT2"],
        "experiments_per_combination": 4,
        "cells_per_experiment": 16,
        "mice": {"per_combination": 4, "share": share, "dims": 3},
    }
    synthetic.write_template(tmp_path / "template.npy", cfg)
    table = synthetic.write_manifest(tmp_path / "manifest.tsv", cfg)
    stores = []
    for eid in table.experiment_id:
        nwb = tmp_path / f"{eid}.nwb"
        synthetic.write_session(
            tmp_path / "template.npy",
            tmp_path / "manifest.tsv",
            eid,
            nwb,
            tmp_path / f"{eid}.tsv",
            cfg,
        )
        stores.append(tmp_path / f"{eid}.zarr")
        neural.convert_session(read_session(nwb), stores[-1], {"store_trials": False})
    population.write_population(stores, tmp_path / "population.zarr", {})
    pop = open_zarr(tmp_path / "population.zarr").load()
    assert sorted(set(pop["mouse"].values)) == ["600000", "600001", "600002", "600003"]
    images = np.load(tmp_path / "template.npy")
    stimuli = xr.Dataset({"images": (("image", "y", "x"), images)})
    ds = prepare.prepare_neural(pop, stimuli, {"groups": ["area"], "n_splits": 2})
    ia = float(ds["ceiling_inter_animal"].sel(mapping="ridge", group="all"))
    reliability = float(np.median(ds["reliability"]))
    assert reliability > 0.3
    if share == 0:
        assert 0.1 < ia <= reliability + 0.05, (ia, reliability)  # 0.20 measured
    else:
        assert abs(ia) < 0.1, ia  # -0.04 measured
