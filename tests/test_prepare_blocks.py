"""Memory bounded by block sizes: compare_prepare streamed by cell blocks and the per-cell RF
path by unit_chunk give the results of the whole array at once."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from mice2machines.compare import prepare
from mice2machines.compare.ceilings import group_ceilings, split_half_metrics
from mice2machines.compare.rdm_methods import noise_precision_diag, rdm_crossnobis
from mice2machines.io import open_zarr, write_zarr_atomic
from mice2machines.neural.reliability import cell_reliability

N, N_IMG, REPS = 240, 30, 8
CFG = {
    "groups": ["area", "cre_line", "experiment_id"],
    "n_splits": 3,
    "min_reliability": 0.0,
    "rsa_crossnobis_partitions": 3,
    "map_size": [6, 8],
}


def population(reliability: bool = True) -> xr.Dataset:
    """Noisy tuning over 30 images, 8 repeats, 5% NaN repeats; cell 20 all NaN and cell 33
    constant (both unusable); six experiments of three mice."""
    g = np.random.default_rng(0)
    resp = (g.normal(size=(N, N_IMG, 1)) + 1.5 * g.normal(size=(N, N_IMG, REPS))).astype(np.float32)
    resp[g.random(resp.shape) < 0.05] = np.nan
    resp[7, 3, :] = np.nan
    resp[11, 4, 1:] = np.nan
    resp[20] = np.nan
    resp[33] = 2.0
    exp = np.arange(N) // 40
    cre = np.array(["Cux2-CreERT2", "Sst-IRES-Cre", "Vip-IRES-Cre"])[np.arange(N) % 3]
    data = {"responses": (("cell", "image", "repeat"), resp)}
    if reliability:
        data["reliability"] = ("cell", g.uniform(-0.1, 1, N).astype(np.float32))
    return xr.Dataset(
        data,
        coords={
            "cell": 1000 + np.arange(N),
            "image": np.arange(N_IMG),
            "experiment_id": ("cell", exp),
            "mouse": ("cell", np.array([f"m{e % 3}" for e in exp])),
            "area": ("cell", np.array(["VISp", "VISl", "VISal"])[(np.arange(N) // 13) % 3]),
            "cre_line": ("cell", cre),
        },
    )


@pytest.fixture(scope="module")
def stimuli() -> xr.Dataset:
    g = np.random.default_rng(5)
    images = g.uniform(0, 255, (N_IMG, 12, 16)).astype(np.float32)
    return xr.Dataset({"images": (("image", "y", "x"), images)}, coords={"image": np.arange(N_IMG)})


def _store(tmp_path, pop: xr.Dataset) -> xr.Dataset:
    write_zarr_atomic(pop.chunk({"cell": 50}), tmp_path / "pop.zarr")
    return open_zarr(tmp_path / "pop.zarr")  # lazy, as the rule reads it


@pytest.mark.parametrize("reliability", [True, False])
def test_streamed_prepare_equals_the_whole_array(tmp_path, stimuli, reliability, caplog):
    """Blocks of 37 cells (not aligned with the store's chunks of 50) give the store of one
    block, and each ceiling, reliability and RDM equals its whole-array function's."""
    pop = _store(tmp_path, population(reliability))
    cfg = {**CFG, "rsa_crossnobis_noise": "identity" if reliability else "diagonal"}
    with caplog.at_level("INFO", logger="mice2machines"):
        streamed = prepare.prepare_neural(pop, stimuli, {**cfg, "cell_block": 37})
    n = int((pop.reliability >= 0).sum()) if reliability else N
    assert caplog.text.count("read (") == -(-n // 37) and n > 200  # a line per block
    whole = prepare.prepare_neural(pop, stimuli, {**cfg, "cell_block": 10**6})
    kept = streamed["cell"].values
    dropped = {1020, 1033}
    if reliability:
        dropped |= set(pop.cell.values[pop.reliability.values < 0])
    assert set(pop.cell.values) - set(kept) == dropped and len(dropped) >= 2 + 10 * reliability
    assert list(whole.data_vars) == list(streamed.data_vars)
    for name, var in whole.variables.items():
        if var.dtype.kind == "f" and name in ("ceiling", "rdm_crossnobis"):
            np.testing.assert_allclose(streamed[name], var, rtol=1e-12, atol=1e-14)
        else:  # trial means, maps, reliabilities, inter-animal ceilings, labels: exact
            np.testing.assert_array_equal(streamed[name], var, err_msg=name)

    R = pop.responses.sel(cell=kept).values
    groups = dict(zip(whole.group.values, prepare.neural_groups(
        prepare.cell_table(streamed), cfg["groups"], 5)["positions"], strict=True))  # fmt: skip
    ceil = group_ceilings(
        R, groups, 3, 0, remove_mean_pattern=True, crossnobis=(3, cfg["rsa_crossnobis_noise"])
    )
    ref = np.array([ceil[m] for m in split_half_metrics()])
    np.testing.assert_allclose(streamed.ceiling, ref, rtol=1e-12)
    assert 0.5 < float(streamed.ceiling.sel(metric="rsa_spearman", group="all")) < 1
    if not reliability:
        np.testing.assert_array_equal(streamed.reliability, cell_reliability(R, 3).astype("f4"))
        for group in ("all", "area:VISp"):
            Rg = R[groups[group]]
            want = rdm_crossnobis(Rg, 3, noise_precision_diag(Rg))
            got = streamed.rdm_crossnobis.sel(group=group).values
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)
    assert np.isfinite(streamed.ceiling_inter_animal.sel(mapping="ridge", group="all"))


def test_prepare_refuses_responses_without_repeats(stimuli):
    pop = population().isel(repeat=0)
    with pytest.raises(ValueError, match=r"\(cell, image, repeat\), not \('cell', 'image'\)"):
        prepare.prepare_neural(pop, stimuli, CFG)


def _rf_context(unit_chunk: int, n_img: int = 30, n_sel: int = 12):
    """A job context of 12 selected neurons over 30 images, maps on a 6x8 grid, 20
    permutations (their maps ride along), with compare.unit_chunk = unit_chunk."""
    from mice2machines.compare import receptive_fields as rf
    from mice2machines.compare import settings
    from mice2machines.compare.inference import permutations
    from mice2machines.compare.registry import JobContext

    g = np.random.default_rng(3)
    Y = g.normal(size=(n_img, n_sel))
    F = rf.stimulus_matrix(g.uniform(0, 255, (n_img, 6, 8)))
    cfg = {**settings({"map_size": [6, 8]}), "unit_chunk": unit_chunk}
    return JobContext(
        Y=Y,
        folds=[],
        selected=np.ones(n_sel, dtype=bool),
        maps=rf.response_maps(Y.T, F),
        stimulus_matrix=F,
        device="cpu",
        dtype=np.dtype("float32"),
        cfg=cfg,
        perms={"n_perm_max": permutations(n_img, 20, 0)},
    )


def _layer(tmp_path, name: str, data: np.ndarray) -> xr.DataArray:
    """A layer stored as ONE zarr chunk (wider than any unit_chunk below)."""
    dims = ("image", "unit") if data.ndim == 2 else ("image", "channel", "y", "x")
    xr.Dataset({"activations": (dims, data)}).to_zarr(
        tmp_path / f"{name}.zarr",
        mode="w",
        consolidated=False,
        encoding={"activations": {"chunks": data.shape}},
    )
    da = open_zarr(tmp_path / f"{name}.zarr")["activations"]
    assert da.chunks[1] == (data.shape[1],)
    return da


def _score(scorer_cls, da, unit_chunk: int):
    """The scorer's results over the layer as stream.iter_unit_chunks yields it, and the
    peak of numpy's allocations while it ran (tracemalloc)."""
    import tracemalloc

    from mice2machines.compare.stream import iter_unit_chunks

    ctx = _rf_context(unit_chunk)
    scorer = scorer_cls(ctx)
    blocks = list(iter_unit_chunks(da, unit_chunk))
    assert len(blocks) == 1  # the store's one chunk: the scorer must slice it
    tracemalloc.start()
    for _, block in blocks:
        scorer.update(block)
    out = scorer.result(None)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return out, peak


def test_rf_path_is_bounded_by_unit_chunk(tmp_path):
    """A flat layer of 20000 units in one store chunk: unit_chunk = 500 gives the results of
    one pass over all units, with a fraction of the memory; planted units are found."""
    from mice2machines.compare.metrics.rf_rmse import RFScorer

    g = np.random.default_rng(4)
    ctx = _rf_context(10)
    acts = g.normal(size=(30, 20000)).astype(np.float32)
    planted = g.choice(20000, 12, replace=False)
    acts[:, planted] = ctx.Y + 0.1 * g.normal(size=ctx.Y.shape)
    acts[:, :50] = 1.0  # dead units: never a best unit
    flat = _layer(tmp_path, "flat", acts)
    small, peak_small = _score(RFScorer, flat, 500)
    whole, peak_whole = _score(RFScorer, flat, 10**9)
    np.testing.assert_array_equal(small["rf_unit"], planted)
    _same(small, whole, "rf_unit", ("rf_rmse", "rf_mean_rmse", "rf_unit_activity", "null"))
    assert peak_small < peak_whole / 5, (peak_small, peak_whole)

    # a spatial layer of 64 channels of 5x5 in one chunk: 2 channels at a time, or all
    spatial = _layer(tmp_path, "spatial", g.normal(size=(30, 64, 5, 5)).astype(np.float32))
    a, b = (_score(RFScorer, spatial, chunk)[0] for chunk in (60, 10**9))
    _same(a, b, "rf_unit", ("rf_rmse", "rf_mean_rmse", "rf_unit_activity", "null"))
    for max_over in ("image", "channel"):
        a, b = (_neurn_score(spatial, chunk, max_over) for chunk in (60, 10**9))
        _same(a, b, "rf_unit_neurn", ("rf_rmse_neurn", "null"))
        assert np.isfinite(a["rf_rmse_neurn"]).all()


def test_rf_maps_are_bounded_whatever_unit_chunk(tmp_path, monkeypatch):
    """A unit_chunk wider than the layer: the maps are still made at most MAP_BYTES at a
    time (here 500 units of the 6 x 8 grid), with the same results and a fraction of the
    memory."""
    from mice2machines.compare.metrics import rf_rmse

    g = np.random.default_rng(5)
    flat = _layer(tmp_path, "flat", g.normal(size=(30, 20000)).astype(np.float32))
    whole, peak_whole = _score(rf_rmse.RFScorer, flat, 10**9)
    monkeypatch.setattr(rf_rmse, "MAP_BYTES", 500 * 6 * 8 * 8)
    capped, peak_capped = _score(rf_rmse.RFScorer, flat, 10**9)
    _same(capped, whole, "rf_unit", ("rf_rmse", "rf_mean_rmse", "rf_unit_activity", "null"))
    assert peak_capped < peak_whole / 5, (peak_capped, peak_whole)


def _same(a: dict, b: dict, unit: str, values) -> None:
    """The same best units; the same RMSEs up to the rounding of other matrix shapes."""
    np.testing.assert_array_equal(a[unit], b[unit])
    for key in values:
        np.testing.assert_allclose(a[key], b[key], rtol=1e-12, atol=1e-15, err_msg=key)


def _neurn_score(da, unit_chunk: int, max_over: str) -> dict:
    from mice2machines.compare.metrics.rf_rmse import RFNeuRNScorer
    from mice2machines.compare.stream import iter_unit_chunks

    ctx = _rf_context(unit_chunk)
    ctx.cfg["neurn"] = {**ctx.cfg["neurn"], "max_over": max_over}
    scorer = RFNeuRNScorer(ctx)
    for _, block in iter_unit_chunks(da, unit_chunk):
        scorer.update(block)
    return scorer.result(None)
