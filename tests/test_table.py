"""The response-table source and stimulus sets: the data contract, refusals at planning, the
NWB path's population store from the same data, and a 1-repeat table through the workflow."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
import yaml
from conftest import ROOT, copy_config, snakemake_cmd

from mice2machines.io import open_zarr
from mice2machines.neural import convert, nwb, population, table
from mice2machines.neural.stimulus_sets import StimulusError, open_stimuli, read_image_folder
from mice2machines.settings import validate_config


def planted_table(n_cells=40, n_images=24, n_repeats=1, size=(16, 20), seed=0) -> xr.Dataset:
    """A table whose cells respond linearly to smooth random fields of the images, plus noise:
    half Cux2 (excitatory), half Vip (inhibitory), in two areas and four sessions."""
    rng = np.random.default_rng(seed)
    images = rng.uniform(0, 255, (n_images, *size)).astype(np.float32)
    fields = rng.normal(size=(n_cells, *size))
    drive = np.einsum("nyx,iyx->ni", fields, images / 255.0)
    drive = (drive - drive.mean(1, keepdims=True)) / drive.std(1, keepdims=True)
    noise = rng.normal(scale=0.5, size=(n_cells, n_images, n_repeats))
    responses = (drive[..., None] + noise).astype(np.float32)
    half = n_cells // 2
    return xr.Dataset(
        {
            "responses": (("cell", "image", "repeat"), responses, {"units": "dF/F"}),
            "stimuli": (("image", "y", "x"), images),
        },
        coords={
            "cell": np.arange(1000, 1000 + n_cells),
            "image": np.arange(n_images) * 3 + 5,  # ids need not be 0..n-1
            "area": ("cell", np.where(np.arange(n_cells) % 2, "VISp", "VISl").astype(object)),
            "cre_line": (
                "cell",
                np.array(["Cux2-CreERT2"] * half + ["Vip-IRES-Cre"] * half, object),
            ),
            "experiment_id": ("cell", np.arange(n_cells) % 2 + 10 * (np.arange(n_cells) >= half)),
        },
    )


def config_for(path, **table_cfg) -> dict:
    cfg = {"source": "table", "table": {"path": str(path), **table_cfg}}
    return validate_config(cfg)


# ---------------------------------------------------------------- stimulus sets


def test_png_folder_is_read(tmp_path):
    """Gray and colour PNGs: ids from the file stems (integers, like the responses' ids), gray
    levels exact, colour through the ITU-R 601 luma weights; sizes must agree."""
    from PIL import Image

    rng = np.random.default_rng(1)
    gray = rng.integers(0, 256, (3, 6, 8), dtype=np.uint8)
    rgb = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    for i, g in zip((7, 2, 11), gray, strict=True):
        Image.fromarray(g).save(tmp_path / f"{i:03d}.png")
    Image.fromarray(rgb).save(tmp_path / "004.png")
    (tmp_path / "notes.txt").write_text("not an image")
    images, ids = read_image_folder(tmp_path, like=np.array([2, 4]))
    assert ids.tolist() == [2, 4, 7, 11]  # sorted by file name
    assert images.shape == (4, 6, 8) and images.dtype == np.float32
    np.testing.assert_array_equal(images[0], gray[1])
    np.testing.assert_array_equal(images[3], gray[2])
    luma = rgb.astype(float) @ np.array([0.299, 0.587, 0.114])
    np.testing.assert_allclose(images[1], luma, atol=1e-3)
    da = open_stimuli(tmp_path, like=np.array([2]))
    assert da.sel(image=7).values.tolist() == gray[0].tolist()
    # names that are not integer ids, for integer responses' ids
    Image.fromarray(gray[0]).save(tmp_path / "scene_a.png")
    with pytest.raises(StimulusError, match="scene_a.*not an integer image id"):
        read_image_folder(tmp_path, like=np.array([2]))
    # string ids are the stems themselves
    assert "scene_a" in read_image_folder(tmp_path, like=np.array(["x"], dtype=object))[1]
    Image.fromarray(gray[0][:5]).save(tmp_path / "020.png")
    with pytest.raises(StimulusError, match="differ in size"):
        read_image_folder(tmp_path)


def test_npy_stimuli_replace_the_table_stimuli(tmp_path):
    """A .npy stack (ids 0..n-1, RGB last axis) as table.stimuli, in the responses' order."""
    ds = planted_table(n_images=6).drop_vars("stimuli").assign_coords(image=[5, 0, 1, 2, 3, 4])
    ds.to_zarr(tmp_path / "t.zarr", zarr_format=3, consolidated=False)
    rgb = np.random.default_rng(2).uniform(0, 255, (6, 4, 5, 3))
    np.save(tmp_path / "s.npy", rgb)
    tcfg = table.settings({"path": str(tmp_path / "t.zarr"), "stimuli": str(tmp_path / "s.npy")})
    table.write_stimuli(tcfg, tmp_path / "stimuli.zarr")
    stim = open_zarr(tmp_path / "stimuli.zarr").load()
    assert stim["image"].values.tolist() == [5, 0, 1, 2, 3, 4]
    luma = rgb @ np.array([0.299, 0.587, 0.114])
    np.testing.assert_allclose(stim["images"].sel(image=5), luma[5], rtol=1e-5)
    assert stim.attrs["source"] == str(tmp_path / "s.npy")
    # a store with (image, y, x, channel) `images` and ids of its own, in another order
    store = xr.Dataset(
        {"images": (("image", "y", "x", "channel"), rgb[::-1])},
        coords={"image": [4, 3, 2, 1, 0, 5]},
    )
    store.to_zarr(tmp_path / "s.zarr", zarr_format=3, consolidated=False)
    table.write_stimuli({**tcfg, "stimuli": str(tmp_path / "s.zarr")}, tmp_path / "st2.zarr")
    again = open_zarr(tmp_path / "st2.zarr").load()
    np.testing.assert_allclose(again["images"].sel(image=5), luma[0], rtol=1e-5)
    np.testing.assert_allclose(again["images"].sel(image=0), luma[1], rtol=1e-5)


# ---------------------------------------------------------------- validation at planning


def _edit(ds: xr.Dataset, what: str) -> xr.Dataset:
    if what == "no_area":
        return ds.drop_vars("area")
    if what == "no_labels":
        return ds.drop_vars("cre_line")
    if what == "dup_cell":
        return ds.assign_coords(cell=np.r_[ds.cell.values[:-1], ds.cell.values[0]])
    if what == "dup_image":
        return ds.assign_coords(image=np.r_[ds.image.values[1:], ds.image.values[1]])
    if what == "dup_session":  # one session id for cells of two areas
        return ds.assign_coords(experiment_id=("cell", np.zeros(ds.sizes["cell"], int)))
    if what == "all_nan":
        return ds.assign(responses=ds.responses * np.nan)
    if what == "strings":
        return ds.assign(responses=ds.responses.astype(str).astype(object))
    if what == "unknown_cre":
        return ds.assign_coords(cre_line=("cell", np.full(ds.sizes["cell"], "Foo-Cre", object)))
    if what == "no_stimuli":
        return ds.drop_vars("stimuli")
    if what == "no_responses":
        return ds.rename(responses="dff")
    raise ValueError(what)


@pytest.mark.parametrize(
    ("what", "message"),
    [
        ("no_area", "no `area` coordinate"),
        ("no_labels", "neither a `cre_line` nor an `ei_class`"),
        ("dup_cell", r"duplicate cell ids \[1000\]"),
        ("dup_image", r"duplicate image ids \[8\] \(coordinate `image`\)"),
        ("dup_session", "duplicate session id 0: its cells have area"),
        ("all_nan", "no finite value"),
        ("strings", "not numbers"),
        ("unknown_cre", "unknown Cre line 'Foo-Cre'.*give an `ei_class`"),
        ("no_responses", "no `responses` variable"),
        ("no_stimuli", "no `stimuli` variable in the table and no table.stimuli set"),
    ],
)
def test_bad_tables_are_refused(tmp_path, what, message):
    path = tmp_path / "t.zarr"
    _edit(planted_table(n_repeats=2), what).to_zarr(path, zarr_format=3, consolidated=False)
    with pytest.raises(table.TableError, match=message) as err:
        table.validate(config_for(path))
    assert str(path) in str(err.value)


@pytest.mark.parametrize("engine", ["scipy", "h5netcdf"])  # netCDF 3, netCDF 4 (HDF5)
def test_one_repeat_refused_or_run_on(tmp_path, engine):
    """1 repeat, from a netCDF 3 or 4 file: a note (go_on, the default), or a refusal that says
    how to go on; a reliability threshold would drop every cell, so it is refused either way."""
    path = tmp_path / "t.nc"
    planted_table(n_repeats=1).squeeze("repeat").to_netcdf(path, engine=engine)
    info = table.validate(config_for(path))
    assert info["ceiling_note"].startswith("no ceiling")
    assert (info["n_cells"], info["n_images"], info["n_repeats"]) == (40, 24, 1)
    with pytest.raises(table.TableError, match="table.one_repeat: go_on"):
        table.validate(config_for(path, one_repeat="refuse"))
    cfg = config_for(path)
    cfg["compare"]["min_reliability"] = 0.2
    with pytest.raises(table.TableError, match="compare.min_reliability would drop every cell"):
        table.validate(cfg)


def test_ei_class_alone_labels_the_cells(tmp_path):
    """ei_class without Cre lines (another rig's labels): kept, cre_line 'unknown'; an
    ei_class that contradicts a known Cre line is refused."""
    ds = planted_table(n_cells=8, n_repeats=3)
    ei = np.array(["excitatory", "inhibitory"] * 4, dtype=object)
    ds.drop_vars("cre_line").assign_coords(ei_class=("cell", ei)).to_zarr(
        tmp_path / "ei.zarr", zarr_format=3, consolidated=False
    )
    pop = table.population(tmp_path / "ei.zarr").compute()
    assert pop.ei_class.values.tolist() == ei.tolist()
    assert set(pop.cre_line.values.tolist()) == {"unknown"}
    assert np.isfinite(pop.reliability).all() and pop.sizes["repeat"] == 3
    ds.assign_coords(ei_class=("cell", ei)).to_zarr(
        tmp_path / "both.zarr", zarr_format=3, consolidated=False
    )
    with pytest.raises(table.TableError, match="'Cux2-CreERT2' are excitatory, not 'inhibitory'"):
        table.validate(config_for(tmp_path / "both.zarr"))


def test_summarize_counts_finite_repeats(tmp_path):
    ds = planted_table(n_repeats=4)
    ds["responses"][:, :, 3] = np.nan  # a padded repeat axis: 3 repeats in fact
    ds.to_zarr(tmp_path / "t.zarr", zarr_format=3, consolidated=False)
    assert table.summarize(tmp_path / "t.zarr") == {
        "n_cells": 40,
        "n_images": 24,
        "n_repeats": 3,
        "areas": ["VISl", "VISp"],
        "cre_lines": ["Cux2-CreERT2", "Vip-IRES-Cre"],
    }


@pytest.mark.workflow
def test_mismatched_image_ids_refused_before_any_job(tmp_path):
    """snakemake -n fails at planning, naming the stimulus folder, the key and the ids."""
    from PIL import Image

    ds = planted_table(n_images=6).drop_vars("stimuli")
    ds.to_zarr(tmp_path / "t.zarr", zarr_format=3, consolidated=False)
    folder = tmp_path / "images"
    folder.mkdir()
    for i in ds.image.values[:-1]:  # the last image has no file
        Image.fromarray(np.zeros((4, 5), np.uint8)).save(folder / f"{i}.png")
    copy_config(tmp_path)
    cfg = {"source": "table", "table": {"path": "t.zarr", "stimuli": "images"}}
    (tmp_path / "config" / "config.yaml").write_text(yaml.safe_dump(cfg))
    proc = subprocess.run(
        snakemake_cmd(tmp_path, "-n", timeout_s=300), capture_output=True, text=True
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "images: 1 image ids of the responses have no stimulus, e.g. [20]" in out
    assert "table.stimuli" in out
    assert not (tmp_path / "results").exists()


# ---------------------------------------------------------------- the NWB path's store


def test_table_population_equals_the_nwb_path(nwb_paths, tmp_path):
    """The NWB path's population written as a table (Cre lines only: E/I derived; blanks kept)
    gives the same population and stimulus stores through the table path."""
    stores = []
    for p in nwb_paths:
        out = tmp_path / f"{p.stem}.zarr"
        convert.convert_session(nwb.read_session(p), out, {"cell_block": 7})
        stores.append(out)
    population.write_population(stores, tmp_path / "pop_nwb.zarr")
    population.write_stimuli(nwb.read_session(nwb_paths[0]), tmp_path / "stim_nwb.zarr")
    ref = open_zarr(tmp_path / "pop_nwb.zarr").load()
    ref_stim = open_zarr(tmp_path / "stim_nwb.zarr").load()

    user = ref.drop_vars(["reliability", "ei_class"])
    user["stimuli"] = ref_stim["images"]
    user.attrs = {}
    user.to_zarr(tmp_path / "table.zarr", zarr_format=3, consolidated=False)
    cfg = config_for(tmp_path / "table.zarr")
    assert table.validate(cfg)["ceiling_note"] is None
    table.write_population(tmp_path / "table.zarr", tmp_path / "pop_table.zarr")
    table.write_stimuli(cfg["table"], tmp_path / "stim_table.zarr")
    got = open_zarr(tmp_path / "pop_table.zarr").load()
    got_stim = open_zarr(tmp_path / "stim_table.zarr").load()

    assert ref.sizes["repeat"] == 12 and ref.sizes["cell"] == 20
    xr.testing.assert_identical(got.drop_attrs(), ref.drop_attrs())
    assert set(got.attrs) == set(ref.attrs) and got.attrs["n_experiments"] == 2
    xr.testing.assert_identical(got_stim.drop_attrs(), ref_stim.drop_attrs())
    assert np.isfinite(got.reliability).all()


# ---------------------------------------------------------------- through the workflow


@pytest.mark.workflow
@pytest.mark.slow
def test_one_repeat_table_through_the_workflow(tmp_path):
    """A 1-repeat table to scores and figures: reliability and ceilings NaN, the reason in
    the population and compare_prepare logs and on (and in the metadata of) the figures."""
    from PIL import Image

    copy_config(tmp_path)
    planted_table(n_repeats=1).to_zarr(tmp_path / "t.zarr", zarr_format=3, consolidated=False)
    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    cfg.update(source="table", table={"path": "t.zarr"})
    zoo = "name\tbuilder\tweights\tinput_size\tlayers\n"
    zoo += "r18\ttorchvision:resnet18\trandom\t48\tnames:conv1,layer2.0.conv1,layer4.1.conv2,fc\n"
    (tmp_path / "config" / "one_model.tsv").write_text(zoo)
    cfg["models"].update(table="config/one_model.tsv", gpu=0, threads=1, writers=1)
    cfg["compare"].update(
        metrics=["rsa_pearson", "cka_unbiased", "ridge"],
        n_perm=5,
        n_perm_max=5,
        n_boot=5,
        n_splits=2,
        n_folds=2,
        min_cells=4,
        map_size=[8, 10],
        selection={"per_class": 10, "n_clusters": 2, "embedding": "pca"},
    )
    (tmp_path / "config" / "config.yaml").write_text(yaml.safe_dump(cfg))
    targets = [
        "results/compare/scores.csv",
        "results/compare/figures/heatmap_rsa_pearson.png",
        "results/compare/figures/best_layer.png",
    ]
    proc = subprocess.run(
        snakemake_cmd(tmp_path, "--cores", "2", *targets, timeout_s=900),
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    logs = tmp_path / "logs"
    for log in ("population.log", "compare/prepare.log", "compare/figures.log"):
        assert "no ceiling: the responses have 1 repeat per image" in (logs / log).read_text()
    pop = open_zarr(tmp_path / "results/neural/population.zarr")
    assert pop.sizes["repeat"] == 1 and np.isnan(pop.reliability).all()
    assert pop["image"].values.tolist() == (np.arange(24) * 3 + 5).tolist()
    scores = pd.read_csv(tmp_path / targets[0])
    assert set(scores["metric"]) == {"rsa_pearson", "cka_unbiased", "ridge"}
    assert scores["ceiling"].isna().all() and scores["score"].notna().any()
    for png in targets[1:]:
        meta = Image.open(tmp_path / png).text
        assert meta["Description"].startswith("no ceiling: the responses have 1 repeat")


def test_readme_example_writes_a_valid_table(tmp_path, monkeypatch):
    """config/README.md's example of writing a table, run as written, passes the checks."""
    import re

    text = (ROOT / "config" / "README.md").read_text()
    assert "source: table" in text and "responses (cell, image[, repeat])" in text
    code = re.search(r"```python\n(import numpy as np, xarray as xr.*?)```", text, re.S)
    assert code is not None and len(code.group(1).strip().splitlines()) <= 12
    monkeypatch.chdir(tmp_path)
    exec(code.group(1), {})
    info = table.validate(config_for(Path("my_table.zarr")))
    assert (info["n_cells"], info["n_images"], info["n_repeats"]) == (300, 118, 10)
    assert info["ceiling_note"] is None
