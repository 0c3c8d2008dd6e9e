"""Preflights of the neural and compare stages: refused before the costly work, with the
file, the setting and the problem named."""

from __future__ import annotations

import pytest
import zarr

from mice2machines import preflight


def _activations(path, images: int, widths: dict):
    """An activation store's layout: one group per layer with ``activations`` (image, unit)."""
    root = zarr.open_group(str(path), mode="w", zarr_format=3)
    for name, units in widths.items():
        root.create_group(name).create_array(
            "activations",
            shape=(images, units),
            dtype="float32",
            chunks=(images, min(units, 500_000)),
            dimension_names=["image", "unit"],
        )
    zarr.consolidate_metadata(str(path))
    return path


@pytest.fixture
def stores(tmp_path):
    root = zarr.open_group(str(tmp_path / "neural.zarr"), mode="w", zarr_format=3)
    root.create_array(
        "responses", shape=(63_000, 118), dtype="float32", dimension_names=["cell", "image"]
    )
    zarr.consolidate_metadata(str(tmp_path / "neural.zarr"))
    acts = _activations(tmp_path / "flat.zarr", 118, {"conv1": 200_000, "fc": 1_000_000})
    return tmp_path / "neural.zarr", acts


def test_layer_widths_and_the_estimate(stores):
    neural, acts = stores
    assert preflight.layer_widths(acts) == {"conv1": 200_000, "fc": 1_000_000}
    est = preflight.compare_model_peak_mb(neural, acts, {"unit_chunk": 65536, "n_folds": 5}, 1000)
    # neural 63k x 118 x 4 B = 29.7 MB; block 65,536 units x 4 B x (3 x 118 + 1,000 x 5)
    assert est["neural_mb"] == pytest.approx(29.7, abs=0.1)
    assert est["block_mb"] == pytest.approx(65536 * 4 * (3 * 118 + 5000) / 1e6, abs=0.1)
    assert est["widest_layer"] == "fc" and est["block_units"] == 65536
    small = preflight.compare_model_peak_mb(neural, acts, {"unit_chunk": 4096, "n_folds": 5}, 1000)
    assert small["peak_mb"] < est["peak_mb"] - 1000


def test_compare_model_is_refused_over_its_declared_memory(stores):
    neural, acts = stores
    cfg = {"unit_chunk": 65536, "n_folds": 5}
    with pytest.raises(preflight.PreflightError) as err:
        preflight.check_compare_model(neural, acts, cfg, mem_mb=1500, cell_cells=1000)
    msg = str(err.value)
    assert str(acts) in msg and "'fc' (1000000 units)" in msg
    assert "compare.unit_chunk=65536" in msg and "mem_mb=1500" in msg
    assert "resources: {compare_model: {mem_mb" in msg
    est = preflight.check_compare_model(neural, acts, cfg, mem_mb=4000, cell_cells=1000)
    assert est["peak_mb"] < 4000


def test_a_store_without_layers_or_cells_is_named(tmp_path, stores):
    neural, acts = stores
    with pytest.raises(preflight.PreflightError, match="no layer arrays"):
        preflight.compare_model_peak_mb(neural, _activations(tmp_path / "e.zarr", 118, {}), {})
    with pytest.raises(preflight.PreflightError, match="not a zarr store"):
        preflight.compare_model_peak_mb(tmp_path / "nothing.zarr", acts, {})


def test_a_store_bigger_than_the_free_disk_is_refused(tmp_path, stores):
    neural, _ = stores
    need = preflight.stores_bytes([neural, neural])
    assert need == pytest.approx(2 * 63_000 * 118 * 4)
    dest = tmp_path / "results" / "population.zarr"
    assert preflight.free_disk(dest, need, "the population")["need_bytes"] == int(need)
    with pytest.raises(preflight.PreflightError) as err:
        preflight.free_disk(dest, 1e18, "the population")
    assert str(dest) in str(err.value) and "1000000000.00 GB" in str(err.value)
    assert not dest.exists()


def test_the_population_preflight_counts_what_it_reads(tmp_path):
    """Experiment stores of 135 cells with their trials (5,950 presentations x 75 frames,
    metadata only): the population needs their responses, not 75 x more for trials."""
    from mice2machines.neural.population import READS

    stores = []
    for i in range(3):
        root = zarr.open_group(str(tmp_path / f"{i}.zarr"), mode="w", zarr_format=3)
        for name, shape in [("responses", (135, 118, 50)), ("blank_responses", (135, 50)),
                            ("trials", (135, 5950, 75))]:  # fmt: skip
            root.create_array(name, shape=shape, dtype="float32")
        zarr.consolidate_metadata(str(tmp_path / f"{i}.zarr"))
        stores.append(tmp_path / f"{i}.zarr")
    every = preflight.stores_bytes(stores)
    assert preflight.stores_bytes(stores, READS) == pytest.approx(3 * 135 * 4 * (118 * 50 + 50))
    assert every > 70 * preflight.stores_bytes(stores, READS)
