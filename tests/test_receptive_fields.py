"""Receptive-field maps N = T'F_S, their RMSE comparison and planted-RF recovery."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mice2machines.compare import receptive_fields as rf


def rng(seed=0):
    return np.random.default_rng(seed)


def test_area_resize():
    w = rf.area_weights(10, 4)
    np.testing.assert_allclose(w.sum(1), 1)
    img = rng().uniform(0, 255, (3, 8, 12))
    small = rf.resize_images(img, (4, 3))
    np.testing.assert_allclose(small, img.reshape(3, 4, 2, 3, 4).mean((2, 4)))
    np.testing.assert_allclose(rf.resize_images(np.full((1, 7, 9), 5.0), (3, 4)), 5.0)
    F = rf.stimulus_matrix(img, (4, 3))
    assert F.shape == (3, 12) and F.max() <= 1.0


def test_response_maps_definition_and_normalisations():
    g = rng(1)
    F = g.uniform(0, 1, (30, 20))
    T = g.gamma(2.0, size=(4, 30))
    raw = rf.response_maps(T, F, center=False, normalize="none")
    np.testing.assert_allclose(raw, T @ F)  # N = T^T . F_S, one row per neuron
    avg = rf.response_maps(T, F, center=False, normalize="sum")
    np.testing.assert_allclose(avg, (T @ F) / T.sum(1, keepdims=True))  # weighted average
    cen = rf.response_maps(T, F, center=True, normalize="none")
    np.testing.assert_allclose(cen, (T - T.mean(1, keepdims=True)) @ F)
    np.testing.assert_allclose(cen, T @ (F - F.mean(0)), atol=1e-10)  # = mean image removed
    z = rf.response_maps(T, F)
    np.testing.assert_allclose(z.mean(1), 0, atol=1e-12)
    np.testing.assert_allclose(z.std(1), 1)
    mm = rf.response_maps(T, F, normalize="minmax")
    assert mm.min() == 0 and mm.max() == 1
    np.testing.assert_allclose(np.linalg.norm(rf.response_maps(T, F, normalize="l2"), axis=1), 1)
    with pytest.raises(ValueError):
        rf.response_maps(T, F, normalize="bogus")


def test_neuron_maps_trial_average_ignores_nan():
    g = rng(2)
    imgs = g.uniform(0, 255, (20, 6, 8))
    resp = g.normal(size=(3, 20, 5))
    with_nan = resp.copy()
    with_nan[:, :, 4] = np.nan
    a = rf.neuron_maps(with_nan, imgs, (3, 4))
    b = rf.neuron_maps(resp[:, :, :4], imgs, (3, 4))
    assert a.shape == (3, 3, 4)
    np.testing.assert_allclose(a, b)


def test_rmse_matrix_and_streaming():
    g = rng(3)
    a, b = g.normal(size=(5, 40)), g.normal(size=(37, 40))
    direct = np.sqrt(((a[:, None] - b[None]) ** 2).mean(-1))
    np.testing.assert_allclose(rf.rmse_matrix(a, b), direct, atol=1e-12)
    acc = rf.RMSEAccumulator(a)
    for lo in range(0, 37, 8):
        acc.update(b[lo : lo + 8])
    res = acc.result()
    np.testing.assert_array_equal(res["best_unit"], direct.argmin(1))
    np.testing.assert_allclose(res["best_rmse"], direct.min(1))
    np.testing.assert_allclose(res["mean_rmse"], direct.mean(1))


def test_channel_activity_neurn_chunks_equal_full_layer():
    torch = pytest.importorskip("torch")
    from mice2machines.neurn import NeuRN

    x = rng(4).normal(size=(6, 10, 9, 11)).astype(np.float32)
    plain, scale = rf.channel_activity(x)
    assert scale is None
    np.testing.assert_allclose(plain, x.mean((2, 3), dtype=np.float64), rtol=1e-6)
    full = NeuRN(kernel_size=3, max_over="image")(torch.from_numpy(x)).mean((2, 3)).numpy()
    parts = [
        rf.channel_activity(x[:, lo : lo + 4], {"kernel_size": 3, "max_over": "image"})
        for lo in range(0, 10, 4)
    ]
    t = np.concatenate([p[0] for p in parts], 1)
    t /= np.max(np.stack([p[1] for p in parts]), 0)[:, None]
    np.testing.assert_allclose(t, full, rtol=1e-5)
    per_channel, s = rf.channel_activity(x, {"kernel_size": 3, "max_over": "channel"})
    assert s is None
    ref = NeuRN(kernel_size=3, max_over="channel")(torch.from_numpy(x)).mean((2, 3)).numpy()
    np.testing.assert_allclose(per_channel, ref, rtol=1e-5)
    tiny, _ = rf.channel_activity(x[:, :, :1, :2], {"kernel_size": 5})  # too small to reflect
    assert np.isfinite(tiny).all()


@pytest.mark.parametrize("max_over", ["image", "channel"])
def test_channel_activity_numpy_on_cpu_equals_torch_device(max_over):
    """'cpu' scores NeuRN in numpy float64, 'torch:cpu' in torch float32: the same numbers."""
    pytest.importorskip("torch")
    x = rng(6).normal(size=(5, 7, 8, 10)).astype(np.float32)
    cfg = {"kernel_size": 4, "max_over": max_over, "padding": "circular"}
    ours, scale = rf.channel_activity(x, cfg, device="cpu")
    ref, ref_scale = rf.channel_activity(x, cfg, device="torch:cpu")
    np.testing.assert_allclose(ours, ref, rtol=1e-5)
    if max_over == "image":
        np.testing.assert_allclose(scale, ref_scale, rtol=1e-5)
    else:
        assert scale is None and ref_scale is None


def test_channel_activity_with_neurn_on_cpu_does_not_import_torch():
    """A comparison job without a GPU pays no torch import (2-3 s) for its NeuRN maps."""
    import subprocess
    import sys

    code = (
        "import sys, numpy as np\n"
        "from mice2machines.compare import receptive_fields as rf\n"
        "t, s = rf.channel_activity(np.ones((2, 3, 6, 6)) + np.arange(6), {}, device='cpu')\n"
        "assert t.shape == (2, 3) and s.shape == (2,)\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_unit_map_matches_its_own_neuron():
    g = rng(5)
    F = g.uniform(0, 1, (50, 24))
    act = g.gamma(1.5, size=(50, 12))  # 12 units
    neurons = act[:, [3, 7]].T + 0.05 * g.normal(size=(2, 50))
    acc = rf.RMSEAccumulator(rf.response_maps(neurons, F))
    acc.update(rf.unit_maps(act[:, :5], F), activity=act[:, :5])
    acc.update(rf.unit_maps(act[:, 5:], F), activity=act[:, 5:])
    res = acc.result()
    np.testing.assert_array_equal(res["best_unit"], [3, 7])
    np.testing.assert_array_equal(res["best_activity"], act[:, [3, 7]].T)


def test_planted_receptive_fields_are_recovered():
    """Synthetic neurons (mice2machines.synthetic): each recovered map matches its planted RF."""
    syn = pytest.importorskip("mice2machines.synthetic")
    pytest.importorskip("skimage")
    h, w = 24, 30
    imgs = syn.make_stimuli(h, w, seed=0)
    exp = syn.Experiment(900000000, 800000000, "VISp", "Cux2-CreERT2", 175, 30, seed=1)
    cells = syn.plant_cells(exp, h, w)
    rates = syn.firing_rates(cells, imgs)
    g = rng(6)
    trials = rates[:, :, None] + g.normal(size=rates.shape + (20,)) * rates.std(1)[:, None, None]
    maps = rf.neuron_maps(trials, imgs, (12, 15)).reshape(len(cells), -1)
    planted = rf.resize_images(syn.rf_maps(cells, h, w), (12, 15)).reshape(len(cells), -1)
    n = len(cells)
    C = np.corrcoef(np.concatenate([maps, planted]))[:n, n:]
    assert (C.argmax(1) == np.arange(n)).mean() >= 0.8  # each map is nearest its own RF
    assert np.median(np.diag(C)) > 5 * np.median(np.abs(C[~np.eye(n, dtype=bool)]))


def test_summaries():
    t = pd.DataFrame(
        {
            "cell": [1, 1, 2, 2, 3, 3],
            "area": ["VISp", "VISp", "VISl", "VISl", "VISp", "VISp"],
            "layer": ["a", "b"] * 3,
            "unit": [0, 1, 2, 3, 4, 5],
            "rmse": [0.5, 0.2, 0.3, 0.9, np.nan, 0.4],
        }
    )
    td = rf.top_down(t, ["area", "layer"])
    row = td[(td.area == "VISp") & (td.layer == "b")].iloc[0]
    assert row["median"] == pytest.approx(0.3) and row["n"] == 2
    bu = rf.bottom_up(t)
    assert bu.set_index("cell")["layer"].to_dict() == {1: "b", 2: "a", 3: "b"}


def test_rmse_accumulator_torch_equals_numpy():
    pytest.importorskip("torch")
    g = np.random.default_rng(3)
    maps, units = g.normal(size=(30, 50)), g.normal(size=(70, 50))
    out = {}
    for device in ("cpu", "torch:cpu"):
        acc = rf.RMSEAccumulator(maps, device=device)
        for lo in range(0, 70, 25):
            acc.update(units[lo : lo + 25], activity=g.normal(size=(9, 25)) * 0 + lo)
        out[device] = acc.result()
    for k in ("best_rmse", "mean_rmse"):
        np.testing.assert_allclose(out["torch:cpu"][k], out["cpu"][k], rtol=1e-12)
    np.testing.assert_array_equal(out["torch:cpu"]["best_unit"], out["cpu"]["best_unit"])
    np.testing.assert_array_equal(out["torch:cpu"]["best_activity"], out["cpu"]["best_activity"])


@pytest.mark.parametrize("device", ["cpu", "torch:cpu"])
def test_dead_units_never_match(device):
    """A constant unit's map is all zero: RMSE exactly 1 to any z-scored map, closer than an
    uncorrelated unit (about sqrt 2); it must not be anyone's best unit."""
    if device != "cpu":
        pytest.importorskip("torch")
    g = np.random.default_rng(4)
    F = g.uniform(0, 1, (60, 20))
    neurons = g.normal(size=(5, 60))
    activity = np.concatenate([g.normal(size=(60, 3)), np.ones((60, 1))], axis=1)
    units = rf.unit_maps(activity, F)
    assert not units[3].any()
    acc = rf.RMSEAccumulator(rf.response_maps(neurons, F), device=device)
    acc.update(units)
    res = acc.result()
    live = rf.rmse_matrix(rf.response_maps(neurons, F), units[:3])
    assert (res["best_unit"] != 3).all()
    np.testing.assert_allclose(res["best_rmse"], live.min(1), rtol=1e-12)
