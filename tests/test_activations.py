"""Activation stores: hooked outputs, in-place safety, dedup, metadata, preflight, readers."""

import json
import os

import numpy as np
import pytest
import torch
import xarray as xr
import zarr
from torch import nn

from mice2machines.io import open_zarr, write_zarr_atomic
from mice2machines.models import extract as A
from mice2machines.models import hooks as H
from mice2machines.models import preprocess as prep
from mice2machines.models import store as St
from mice2machines.models import zoo

N_IMAGES = 6


@pytest.fixture(scope="module")
def stimuli(tmp_path_factory):
    """A stimulus store in the layout of results/stimuli.zarr: images (image, y, x) 0-255."""
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, size=(N_IMAGES, 36, 44)).astype(np.float32)
    ds = xr.Dataset(
        {"images": (("image", "y", "x"), images)}, coords={"image": np.arange(N_IMAGES) + 100}
    )
    path = tmp_path_factory.mktemp("stim") / "stimuli.zarr"
    write_zarr_atomic(ds, path)
    return path


def images_of(stimuli):
    return open_zarr(stimuli)["images"].load()


RESNET = zoo.ModelSpec(
    "r18", "torchvision:resnet18", "random", 32, layers="types:Conv2d,BatchNorm2d,ReLU,Linear"
)


@pytest.fixture(scope="module")
def resnet_store(stimuli, tmp_path_factory):
    out = tmp_path_factory.mktemp("act") / "r18.zarr"
    ex = A.extract_model(RESNET, stimuli, out, A.ExtractSettings(batch_size=4, writers=2))
    return out, ex


def test_hooked_outputs_equal_direct_submodule_calls(stimuli, resnet_store):
    path, _ = resnet_store
    m = zoo.build_model(RESNET)  # same seed: same weights
    with torch.no_grad():
        x = prep.make_preprocess(RESNET)(torch.from_numpy(images_of(stimuli).values))
        conv1 = m.conv1(x)
        stem = torch.relu(m.bn1(conv1))
        blk = m.layer1[0]
        c1 = blk.conv1(m.maxpool(stem))
        b2 = blk.bn2(blk.conv2(torch.relu(blk.bn1(c1))))
        out = torch.relu(b2 + m.maxpool(stem))
        logits = m(x)
    direct = {
        "conv1": conv1,
        "relu": stem,
        "layer1.0.conv1": c1,
        "layer1.0.bn2": b2,  # BasicBlock does `out += identity` on it in place afterwards
        "layer1.0.relu@1": out,  # second call of the same ReLU module
        "fc": logits,
    }
    for layer, want in direct.items():
        got = St.open_layer(path, layer)
        assert got.dims == (("image", "unit") if layer == "fc" else ("image", "channel", "y", "x"))
        torch.testing.assert_close(torch.from_numpy(got.values), want, rtol=1e-4, atol=1e-5)


def test_store_layout_metadata_and_attrs(stimuli, resnet_store):
    path, ex = resnet_store
    table = St.list_layers(path)
    assert list(table.columns) == list(H.TABLE_COLUMNS)
    assert table["order"].tolist() == list(range(len(table)))
    assert table["depth"].iloc[0] == 0 and table["depth"].iloc[-1] == 1
    row = table.set_index("layer").loc["layer1.0.conv1"]
    assert row["type"] == "Conv2d" and row["shape"] == (64, 8, 8) and row["features"] == 64 * 64
    assert row["parameters"] == 64 * 64 * 3 * 3
    assert table.set_index("layer").loc["fc", "parameters"] == 512 * 1000 + 1000
    # every call of the reused ReLU of each block is its own layer
    assert {"layer1.0.relu", "layer1.0.relu@1"} <= set(table["layer"])
    root = zarr.open_group(str(path), mode="r")
    assert set(root.group_keys()) == set(table.loc[table["stored"], "layer"])
    fc = St.open_layer(path, "fc")
    assert fc.shape == (N_IMAGES, 1000)
    np.testing.assert_array_equal(fc["image"].values, np.arange(N_IMAGES) + 100)
    arr = root["conv1/activations"]
    assert arr.shape == (N_IMAGES, 64, 16, 16) and arr.chunks[0] == 3  # batch 4 -> 2 x 3
    for layer in table.loc[table["stored"], "layer"]:
        assert not np.isnan(St.open_layer(path, layer).values).any(), layer
    key = St.read_cache_key(path)
    for field in ("model", "weights_sha256", "state_sha256", "preprocess", "neurn", "code_version"):
        assert field in key
    assert key["preprocess"]["input_size"] == 32 and key["neurn"] is None
    assert root.attrs["cache_key_sha256"]
    assert json.loads(root.attrs["provenance"])["code_version"] == key["code_version"]
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temp left


class Twice(nn.Module):
    def __init__(self):
        super().__init__()
        self.act = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.act(self.act(x) - 0.5)


def tiny_net():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),  # 0: has negative values
        nn.ReLU(inplace=True),  # 1: would overwrite 0 in place
        nn.Dropout(0.5),  # 2: identity in eval -> duplicate of 1
        nn.Identity(),  # 3: duplicate of 1
        nn.ReLU(),  # 4: relu of relu -> duplicate of 1
        Twice(),  # 5.act (duplicate of 1), 5.act@1: two calls of one module
        nn.Flatten(),  # 6: same values as 5.act@1 but another shape -> stored
        nn.Linear(4 * 8 * 8, 3),  # 7
    )


def run_tiny(stimuli, path, n_images=N_IMAGES, **settings):
    net = tiny_net()
    spec = zoo.ModelSpec("tiny", "torchvision:x", "random", 8)
    return A.extract(
        net, prep.make_preprocess(spec), images_of(stimuli)[:n_images], path,
        H.select_layers(net, "all"), A.ExtractSettings(**{"batch_size": 4, **settings}),
    )  # fmt: skip


def test_inplace_safety_and_dedup(stimuli, tmp_path):
    path = tmp_path / "tiny.zarr"
    ex = run_tiny(stimuli, path)
    t = ex.table.set_index("layer")
    assert t.loc["2", "duplicate_of"] == "1" and t.loc["3", "duplicate_of"] == "1"
    assert t.loc["4", "duplicate_of"] == "1"
    assert t.loc["5.act", "duplicate_of"] == "1"  # relu of a relu
    assert t.loc["5.act@1", "duplicate_of"] == ""
    assert t.loc["6", "duplicate_of"] == "" and t.loc["6", "dims"] == "image,unit"
    assert list(t.index[t["stored"]]) == ["0", "1", "5.act@1", "6", "7"]
    conv = St.open_layer(path, "0").values
    assert conv.min() < 0  # the in-place ReLU after it did not clobber the captured output
    np.testing.assert_array_equal(St.open_layer(path, "2").values, St.open_layer(path, "1").values)
    assert St.open_layer(path, "2").name == "2"
    assert not (path / "2").exists()
    np.testing.assert_allclose(St.open_layer(path, "1").values, np.maximum(conv, 0))
    twice = St.open_layer(path, "5.act@1").values
    np.testing.assert_allclose(twice, np.maximum(np.maximum(conv, 0) - 0.5, 0))
    with pytest.raises(KeyError, match="no layer"):
        St.open_layer(path, "nope")


class Flaky(nn.Module):
    """Identity on the probe, then not: the duplicate check must catch it."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return x if self.calls == 1 else x + 1


def test_duplicate_check_catches_probe_coincidence(stimuli, tmp_path):
    net = nn.Sequential(nn.Conv2d(3, 2, 3), Flaky())
    spec = zoo.ModelSpec("f", "torchvision:x", "random", 8)
    with pytest.raises(H.ExtractionError, match="matched"):
        A.extract(net, prep.make_preprocess(spec), images_of(stimuli), tmp_path / "f.zarr",
                  ["0", "1"], A.ExtractSettings(batch_size=2))  # fmt: skip
    assert not (tmp_path / "f.zarr").exists()
    assert not list(tmp_path.iterdir())  # the temporary store was removed too


def test_probe_refuses_outputs_that_do_not_lead_with_the_images(stimuli, tmp_path):
    """MobileViT's default layers include its attention projections, which run on tokens
    batched by patch position: the probe stops, naming the layer, before any store."""
    spec = zoo.ModelSpec("mv", "timm:mobilevit_xxs.cvnets_in1k", "random", 64, "model")
    with pytest.raises(H.ExtractionError) as err:
        A.extract_model(spec, stimuli, tmp_path / "mv.zarr", A.ExtractSettings(batch_size=4))
    text = str(err.value)
    assert "layer stages.2.1.transformer.0.attn.qkv (Linear) outputs (" in text
    assert "does not lead with the images" in text and "layers column" in text
    assert not list(tmp_path.iterdir())
    spec = zoo.ModelSpec("mv", "timm:mobilevit_xxs.cvnets_in1k", "random", 64, "model",
                         layers="types:Conv2d,MobileVitBlock")  # fmt: skip
    ex = A.extract_model(spec, stimuli, tmp_path / "mv.zarr", A.ExtractSettings(batch_size=4))
    assert ex.table["stored"].sum() >= 10


def test_preflight_limits(stimuli, tmp_path):
    path = tmp_path / "big.zarr"
    with pytest.raises(A.PreflightError, match="max_store_gb"):
        run_tiny(stimuli, path, max_store_gb=1e-6)
    assert not path.exists()
    # staging for one image (2 x 4 KiB-ish) over the memory limit: fail
    with pytest.raises(A.PreflightError, match="max_memory_gb"):
        run_tiny(stimuli, path, max_memory_gb=1e-8)
    # a limit that fits 2 images per batch: the batch shrinks, the result is unchanged
    ref = run_tiny(stimuli, tmp_path / "ref.zarr")
    per_image = A.bytes_per_image(ref.table)
    small = run_tiny(stimuli, path, max_memory_gb=2.5 * 2 * per_image / 1024**3)
    assert small.estimates["batch_size"] == 2  # 3 even batches of the 6 images
    assert small.estimates["store_bytes"] == per_image * N_IMAGES
    for layer in ("0", "7"):
        np.testing.assert_array_equal(
            St.open_layer(path, layer).values, St.open_layer(tmp_path / "ref.zarr", layer).values
        )


def test_float16_store_bf16_compute_and_compression(stimuli, tmp_path):
    ref = tmp_path / "ref.zarr"
    run_tiny(stimuli, ref)
    run_tiny(stimuli, tmp_path / "lz4.zarr", compressor="lz4")
    np.testing.assert_array_equal(
        St.open_layer(tmp_path / "lz4.zarr", "7").values, St.open_layer(ref, "7").values
    )
    run_tiny(stimuli, tmp_path / "f16.zarr", store_dtype="float16")
    f16 = St.open_layer(tmp_path / "f16.zarr", "0")
    assert f16.dtype == np.float16
    np.testing.assert_allclose(f16.values, St.open_layer(ref, "0").values, rtol=1e-3, atol=1e-3)
    run_tiny(stimuli, tmp_path / "bf16.zarr", precision="bf16")
    for layer in ("0", "7"):
        a = St.open_layer(tmp_path / "bf16.zarr", layer).values.astype(np.float64)
        b = St.open_layer(ref, layer).values.astype(np.float64)
        assert np.linalg.norm(a - b) / np.linalg.norm(b) < 2e-2  # bf16: 8-bit mantissa


@pytest.mark.parametrize("chunk_mb", [0.00115, 32.0])
def test_direct_chunk_files_equal_zarr_writes(stimuli, tmp_path, chunk_mb):
    """Uncompressed stores are written chunk file by chunk file; zarr must read back exactly
    what its own (compressed) write path stores, edge chunks included: 5 images in batches
    of 3 and 2, and (small chunks) 256 units in chunks of 86."""
    for name, compressor in (("zarr", "zstd"), ("direct", "none")):
        run_tiny(stimuli, tmp_path / f"{name}.zarr", compressor=compressor, chunk_mb=chunk_mb,
                 batch_size=3, n_images=5)  # fmt: skip
    root = zarr.open_group(str(tmp_path / "direct.zarr"), mode="r")
    assert root["6/activations"].chunks == ((3, 86) if chunk_mb < 1 else (3, 256))
    for layer in ("0", "1", "5.act@1", "6", "7"):
        got = St.open_layer(tmp_path / "direct.zarr", layer).values
        want = St.open_layer(tmp_path / "zarr.zarr", layer).values
        assert got.shape[0] == 5 and not np.isnan(got).any()
        np.testing.assert_array_equal(got, want)


def test_select_layers():
    net = tiny_net()
    assert H.select_layers(net, "types", ["ReLU"]) == ["1", "4", "5.act"]
    assert H.select_layers(net, "types", ["Module"])[0] == "0"  # MRO: every module
    assert H.select_layers(net, "names", ["7", "0"]) == ["7", "0"]
    assert "5" not in H.select_layers(net, "all")  # containers are not leaves
    with pytest.raises(ValueError, match="no module of types"):
        H.select_layers(net, "types", ["Conv3d"])
    with pytest.raises(ValueError, match="no modules named"):
        H.select_layers(net, "names", ["99"])
    assert H.make_out_of_place(net) == ["1", "5.act"]
    assert H.make_out_of_place(net) == []


def test_readers_fail_clearly(tmp_path):
    with pytest.raises(FileNotFoundError):
        St.list_layers(tmp_path / "missing.zarr")


def test_neurn_in_front_changes_input(stimuli, tmp_path):
    spec = zoo.ModelSpec(
        "n", "torchvision:resnet18", "random", 32, layers="names:conv1", neurn="k=3"
    )
    ex = A.extract_model(spec, stimuli, tmp_path / "n.zarr", A.ExtractSettings(batch_size=8))
    assert ex.table["layer"].tolist() == ["conv1"]
    key = St.read_cache_key(tmp_path / "n.zarr")
    assert key["neurn"]["kernel_size"] == 3 and key["preprocess"]["neurn"]["kernel_size"] == 3
    m = zoo.build_model(spec)
    with torch.no_grad():
        x = prep.make_preprocess(spec)(torch.from_numpy(images_of(stimuli).values))
        want = m.conv1(x)
    got = torch.from_numpy(St.open_layer(tmp_path / "n.zarr", "conv1").values)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    assert os.path.isdir(tmp_path / "n.zarr" / "conv1")
