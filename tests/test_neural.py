"""Responses, trials, reliability and the population store."""

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from mice2machines import synthetic
from mice2machines.io import open_zarr
from mice2machines.neural import convert as neural
from mice2machines.neural import population, reliability
from mice2machines.neural.nwb import read_session


def test_window_mean_matches_loop():
    rng = np.random.default_rng(0)
    dff = rng.normal(size=(3, 200)).astype(np.float32)
    starts = np.array([0, 5, 30, 100, 190])
    got = neural.window_mean(dff, starts, -28, 28)
    for j, s in enumerate(starts):
        if s - 28 < 0:
            assert np.isnan(got[:, j]).all()
        else:
            np.testing.assert_allclose(got[:, j], dff[:, s - 28 : s].mean(1), rtol=1e-6)
    got = neural.window_mean(dff, starts, 0, 14)
    assert np.isnan(got[:, -1]).all()  # 190 + 14 > 200
    np.testing.assert_allclose(got[:, 2], dff[:, 30:44].mean(1), rtol=1e-6)


def test_window_mean_tiles_keep_the_sequential_sums():
    """Tiled sums equal plain sequential float64 sums bit for bit, whatever the starts'
    order, with values spread over 60 decades (where summation order shows)."""
    rng = np.random.default_rng(5)
    dff = (rng.normal(size=(3, 5000)) * 10.0 ** rng.integers(-30, 30, (3, 5000))).astype(np.float32)
    starts = rng.integers(28, 4980, 3 * neural.WINDOW_TILE)
    for order in (starts, np.sort(starts)):
        got = neural.window_mean(dff, order, -28, 28)
        for j, s in enumerate(order):
            acc = np.zeros(3)
            for k in range(28):
                acc += dff[:, s - 28 + k]
            np.testing.assert_array_equal(got[:, j], acc / 28)


def test_responses_and_trials_by_hand():
    rng = np.random.default_rng(1)
    dff = rng.normal(size=(2, 400)).astype(np.float32)
    starts = np.array([40, 47, 55, 300])
    cfg = neural.settings({})
    r = neural.presentation_responses(dff, starts, cfg)
    expect = 100 * (dff[:, 47:61].mean(1) - dff[:, 19:47].mean(1))
    np.testing.assert_allclose(r[:, 1], expect, rtol=1e-5)
    tr = neural.trial_windows(dff, starts, (-30, 45))
    assert tr.shape == (2, 4, 75)
    np.testing.assert_array_equal(tr[:, 0, :], dff[:, 10:85])


def test_repeat_numbers():
    np.testing.assert_array_equal(
        neural.repeat_numbers(np.array([3, -1, 3, 5, 3, -1])), [0, 0, 1, 0, 2, 1]
    )


def test_reliability_is_spearman_brown_of_split_halves():
    rng = np.random.default_rng(2)
    tuning = rng.normal(size=(4, 30, 1))
    data = tuning + rng.normal(size=(4, 30, 10)) * np.array([0.1, 1, 3, 30])[:, None, None]
    da = xr.DataArray(data, dims=("cell", "image", "repeat"))
    rel = reliability.split_half_reliability(da).values
    for c in range(4):
        a, b = data[c, :, 0::2].mean(1), data[c, :, 1::2].mean(1)
        r = np.corrcoef(a, b)[0, 1]
        assert rel[c] == pytest.approx(2 * r / (1 + r), rel=1e-5)
    assert rel[0] > 0.95 and rel[0] > rel[1] > rel[2]
    rnd = reliability.split_half_reliability(da, split="random", seed=1).values
    assert rnd.shape == (4,) and rnd[0] > 0.95


def test_convert_session_blocks_agree_and_label(nwb_paths, tmp_path):
    s = read_session(nwb_paths[0])
    one = tmp_path / "one.zarr"
    many = tmp_path / "many.zarr"
    neural.convert_session(s, one, {"cell_block": 1000})
    neural.convert_session(s, many, {"cell_block": 3})
    a = open_zarr(one).load()
    b = open_zarr(many).load()
    xr.testing.assert_identical(a.drop_attrs(), b.drop_attrs())
    assert a.responses.dims == ("cell", "image", "repeat")
    assert a.trials.dims == ("cell", "presentation", "time")
    assert a.responses.attrs["units"] == "percent dF/F"
    assert set(a.area.values) == {"VISp"} and set(a.ei_class.values) == {"excitatory"}
    assert set(a.mouse.values) == {s.mouse} and s.mouse == "600000"  # the specimen name's tail
    assert a.cell.values.tolist() == s.cell_specimen_ids.tolist()
    assert a.sizes["repeat"] == 12 and a.sizes["blank"] == 12
    assert not np.isnan(a.responses.values).any()
    # the response of presentation k equals the trial snippet's windows
    k = 50
    img, rep = int(a.presentation_image[k]), int(a.presentation_repeat[k])
    snippet = a.trials.isel(presentation=k).values.astype(np.float64)  # time -30..44
    expect = 100 * (snippet[:, 30:44].mean(1) - snippet[:, 2:30].mean(1))
    np.testing.assert_allclose(
        a.responses.sel(image=img, repeat=rep).values, expect, rtol=1e-4, atol=1e-4
    )
    prov = a.attrs["provenance"]
    assert '"code_version"' in prov and str(nwb_paths[0]) in prov


def test_responses_recover_planted_tuning(nwb_paths, synthetic_dir, tmp_path):
    s = read_session(nwb_paths[0])
    neural.convert_session(s, tmp_path / "e.zarr", {})
    ds = open_zarr(tmp_path / "e.zarr")
    cells = pd.read_csv(synthetic_dir / f"{s.experiment_id}_cells.tsv", sep="\t")
    images = np.load(synthetic_dir / "template.npy")
    rates = synthetic.firing_rates(cells, images)
    mean = ds.responses.mean("repeat").values
    r = [np.corrcoef(mean[i], rates[i])[0, 1] for i in range(len(cells))]
    assert np.median(r) > 0.6


def test_population_concatenates_and_filters(nwb_paths, tmp_path):
    stores = []
    for p in nwb_paths:
        out = tmp_path / f"{p.stem}.zarr"
        neural.convert_session(read_session(p), out, {})
        stores.append(out)
    pop_path = tmp_path / "population.zarr"
    summary = population.write_population(stores, pop_path, {})
    pop = open_zarr(pop_path)
    n = sum(open_zarr(s).sizes["cell"] for s in stores)
    assert summary["cells"] == pop.sizes["cell"] == n
    assert set(pop.ei_class.values) == {"excitatory", "inhibitory"}
    assert set(pop.mouse.values) == {"600000", "600001"}  # one mouse per synthetic experiment
    assert pop.cell.to_index().is_unique
    assert pop.reliability.dims == ("cell",)
    assert float(pop.reliability.min()) > -1 and float(pop.reliability.max()) <= 1
    filtered = population.population_dataset(
        stores, {"cre_lines": ["Sst-IRES-Cre"], "min_reliability": 0.2}
    )
    assert set(filtered.cre_line.values) == {"Sst-IRES-Cre"}
    assert (filtered.reliability >= 0.2).all()


def test_store_trials_off_keeps_responses(nwb_paths, tmp_path):
    s = read_session(nwb_paths[0])
    neural.convert_session(s, tmp_path / "a.zarr", {})
    neural.convert_session(s, tmp_path / "b.zarr", {"store_trials": False})
    a = open_zarr(tmp_path / "a.zarr")
    b = open_zarr(tmp_path / "b.zarr")
    assert "trials" in a and "trials" not in b
    np.testing.assert_array_equal(a.responses.values, b.responses.values)


def _reference_store(path, cfg: dict, drop_rows=()) -> xr.Dataset:
    """The experiment store's values from the NWB file by plain per-presentation loops, with
    the same float64 arithmetic (sequential window sums) as the conversion."""
    import h5py

    from mice2machines.neural.nwb import CELL_IDS, DFF, DFF_TIME

    with h5py.File(path, "r") as f:
        dff = f[DFF][()].astype(np.float32)
        ids, t = f[CELL_IDS][()], f[DFF_TIME][()]
        g = f["stimulus/presentation/natural_scenes_stimulus"]
        frames, spans = g["data"][()], g["frame_duration"][()]
    keep = [i for i in range(len(ids)) if i not in drop_rows]
    dff, ids = dff[keep], ids[keep]
    order = np.argsort(spans[:, 0], kind="stable")
    images, starts = frames[order].astype(np.int64), spans[order, 0].astype(np.int64)
    n_cells, n_frames = dff.shape

    def mean(s, offset, length):
        if s + offset < 0 or s + offset + length > n_frames:
            return np.full(n_cells, np.nan)
        acc = np.zeros(n_cells)
        for k in range(length):
            acc += dff[:, s + offset + k]
        return acc / length

    b, r0, rn = cfg["baseline_frames"], cfg["response_offset_frames"], cfg["response_frames"]
    per = np.stack([(mean(s, r0, rn) - mean(s, -b, b)) * 100.0 for s in starts], 1)
    per = per.astype(np.float32)
    lo, hi = cfg["trial_window_frames"]
    trials = np.full((n_cells, len(starts), hi - lo), np.nan, np.float32)
    for j, s in enumerate(starts):
        for k, frame in enumerate(range(s + lo, s + hi)):
            if 0 <= frame < n_frames:
                trials[:, j, k] = dff[:, frame]
    reps, seen = np.full(len(images), -1), {}
    for j, img in enumerate(images):
        if img >= 0:
            reps[j] = seen.get(img, 0)
            seen[img] = reps[j] + 1
    resp = np.full((n_cells, images.max() + 1, reps.max() + 1), np.nan, np.float32)
    for j in np.flatnonzero(images >= 0):
        resp[:, images[j], reps[j]] = per[:, j]
    blank = np.flatnonzero(images < 0)
    return xr.Dataset(
        {
            "responses": (("cell", "image", "repeat"), resp),
            "blank_responses": (("cell", "blank"), per[:, blank]),
            "trials": (("cell", "presentation", "time"), trials),
        },
        coords={
            "cell": ids,
            "presentation_image": ("presentation", images),
            "presentation_repeat": ("presentation", reps),
            "onset_frame": ("presentation", starts),
            "onset_time": ("presentation", t[starts]),
            "blank_onset_time": ("blank", t[starts[blank]]),
            "time": ("time", np.arange(lo, hi) * np.median(np.diff(t))),
        },
    )


@pytest.mark.parametrize(
    "cfg, poison",
    [
        ({"cell_block": 3}, None),
        (
            {"cell_block": 4, "baseline_frames": 130, "trial_window_frames": [-125, 400]},
            1,
        ),
    ],
    ids=["defaults", "edges-and-a-bad-trace"],
)
def test_store_equals_a_plain_reference(nwb_copy, tmp_path, cfg, poison):
    """Every value, coordinate and attribute of the store equals a loop-by-loop reference
    read straight from the NWB file: block edges, windows leaving the recording, a dropped
    bad trace, trials over more than one store chunk."""
    import h5py

    from mice2machines.neural.nwb import DFF

    if poison is not None:
        with h5py.File(nwb_copy, "r+") as f:
            f[DFF][poison, 10] = np.nan
    s = read_session(nwb_copy)
    summary = neural.convert_session(s, tmp_path / "e.zarr", cfg)
    got = open_zarr(tmp_path / "e.zarr").load()
    full = neural.settings(cfg)
    ref = _reference_store(nwb_copy, full, drop_rows=() if poison is None else (poison,))
    assert summary == {"cells": ref.sizes["cell"], "dropped": 0 if poison is None else 1}
    if poison is not None:  # the windows leave the recording at both ends
        assert np.isnan(ref.responses.values).any() and np.isnan(ref.trials[:, -1]).any()
    for name in ref.data_vars:
        assert got[name].dtype == np.float32
        np.testing.assert_array_equal(got[name].values, ref[name].values, strict=True)
    for name, coord in ref.coords.items():
        np.testing.assert_array_equal(got[name].values, coord.values, err_msg=name)
    assert got.responses.attrs["units"] == "percent dF/F"
    assert got.trials.attrs["units"] == "dF/F"
    expect = {
        "experiment_id": s.experiment_id,
        "container_id": s.container_id,
        "area": s.area,
        "cre_line": s.cre_line,
        "mouse": s.mouse_label,
        "session_type": s.session_type,
        "baseline_window_frames": [-full["baseline_frames"], 0],
        "response_window_frames": [0, full["response_frames"]],
        "trial_window_frames": list(full["trial_window_frames"]),
        "source_file": str(nwb_copy),
    }
    assert {k: got.attrs[k] for k in expect} == expect
    assert set(got.area.values) == {s.area} and set(got.mouse.values) == {s.mouse_label}
    # 1,428 presentations: trials span two store chunks of presentations
    assert got.sizes["presentation"] > open_zarr(tmp_path / "e.zarr").trials.chunks[1][0]
