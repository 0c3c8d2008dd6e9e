"""Model sources beyond torchvision: timm, a user's module factory, TorchScript files, local
state dicts; deep validation of rows; the summaries behind ``m2m inspect``."""

import numpy as np
import pytest
import torch

from mice2machines.io import write_zarr_atomic
from mice2machines.models import zoo
from mice2machines.models.extract import ExtractSettings, extract_model
from mice2machines.models.preprocess import make_preprocess
from mice2machines.models.store import list_layers, open_layer
from mice2machines.models.weights import WeightsError
from mice2machines.neural.population import stimuli_dataset
from mice2machines.summaries import SUMMARIZERS, format_summary, summarize

USER_FILE = """
import torch
from torch import nn


class Tiny(nn.Module):
    def __init__(self, width=4):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, stride=2)
        self.act = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(width, 6, 3)
        self.head = nn.Linear(6, 5)

    def forward(self, x):
        x = self.conv2(self.act(self.conv1(x)))
        return self.head(x.mean((2, 3)))


def make_net():
    return Tiny()


class Nets:
    @staticmethod
    def wide():
        return Tiny(width=8)


def not_a_module():
    return 3
"""


def row(**values):
    return zoo.spec_from_values({"name": "m", "weights": "random", "input_size": "32", **values})


@pytest.fixture
def user_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "nets.py").write_text(USER_FILE)
    return "nets.py"


def test_timm_rows_use_timms_data_config_and_validate_names():
    vit = row(builder="timm:vit_tiny_patch16_224", input_size="32")
    assert vit.preprocess == "model"  # the timm rows' default
    prep = make_preprocess(vit)
    assert prep.mean.flatten().tolist() == [0.5, 0.5, 0.5]  # timm's config for this ViT
    resnet = row(builder="timm:resnet10t")
    assert torch.allclose(
        prep.std.new_tensor([0.229, 0.224, 0.225]), make_preprocess(resnet).std.flatten()
    )
    a, b = zoo.build_model(resnet), zoo.build_model(resnet)
    assert zoo.state_sha256(a) == zoo.state_sha256(b)  # random twins are seeded
    assert a(make_preprocess(resnet)(torch.rand(2, 20, 24) * 255)).shape == (2, 1000)
    zoo.validate_zoo_deep([resnet, row(builder="timm:resnet10t.c3_in1k", weights="pretrained")])
    with pytest.raises(zoo.ZooError, match="t.tsv: model 'm' .*timm has no model 'resnet10tt'"):
        zoo.validate_zoo_deep([row(builder="timm:resnet10tt")], "t.tsv")
    with pytest.raises(zoo.ZooError, match="Invalid pretrained tag"):
        zoo.validate_zoo_deep([row(builder="timm:resnet10t.nope")])
    with pytest.raises(zoo.ZooError, match="no weights 'pretraind'"):
        row(builder="timm:resnet10t", weights="pretraind")


def test_timm_pretrained_missing_from_cache_names_model_and_repo(tmp_path):
    spec = row(name="r10", builder="timm:resnet10t", weights="pretrained")
    with pytest.raises(WeightsError) as err:
        zoo.load_model(spec, tmp_path)
    text = str(err.value)
    assert "'r10'" in text and "timm/resnet10t.c3_in1k" in text and "fetch_weights" in text


def test_module_rows_resolve_the_users_factory(user_file, tmp_path):
    spec = row(builder="module:nets.py:make_net")
    assert zoo.local_files(spec) == ["nets.py"]
    zoo.validate_zoo_deep([spec, row(builder="module:nets.py:Nets.wide")])
    net = zoo.build_model(spec)
    assert type(net).__name__ == "Tiny" and net.conv1.out_channels == 4
    assert zoo.build_model(row(builder="module:nets.py:Nets.wide")).conv1.out_channels == 8
    # a state dict of it (saved by DataParallel: 'module.' prefixes) loads strictly
    torch.manual_seed(5)
    trained = zoo.BUILDERS["module"].fn("nets.py:make_net", None, spec, None)
    torch.save({"state_dict": {f"module.{k}": v for k, v in trained.state_dict().items()}}, "w.pt")
    loaded = zoo.build_model(row(builder="module:nets.py:make_net", weights="file:w.pt"))
    assert zoo.state_sha256(loaded) == zoo.state_sha256(trained) != zoo.state_sha256(net)
    bad = {
        "module:nets.py:make_nett": "nets.py has no 'make_nett'",
        "module:other.py:make_net": "file other.py does not exist",
        "module:no_such_package.nets:make_net": "cannot import module 'no_such_package.nets'",
    }
    for builder, message in bad.items():
        with pytest.raises(zoo.ZooError, match=message):
            zoo.validate_zoo_deep([row(builder=builder)], "t.tsv")
    with pytest.raises(zoo.ZooError, match="expected module:<import.path"):
        row(builder="module:make_net")
    with pytest.raises(zoo.ZooError, match="not an nn.Module"):
        zoo.build_model(row(builder="module:nets.py:not_a_module"))
    (tmp_path / "broken.py").write_text("import no_such_thing\n")
    with pytest.raises(zoo.ZooError, match="broken.py: importing it failed: ModuleNotFoundError"):
        zoo.validate_zoo_deep([row(builder="module:broken.py:f")])


def _stimuli(tmp_path, n=6):
    images = np.random.default_rng(0).uniform(0, 255, (n, 20, 24)).astype(np.float32)
    path = tmp_path / "stimuli.zarr"
    write_zarr_atomic(stimuli_dataset(images, "test", "{}"), path)
    return path, images


def test_torchscript_rows_store_the_networks_output(user_file, tmp_path):
    spec = row(builder="module:nets.py:make_net")
    net = zoo.build_model(spec)
    torch.jit.script(net).save(str(tmp_path / "net.ts"))
    ts = row(builder=f"torchscript:{tmp_path / 'net.ts'}", weights="package")
    assert ts.layers == "names:output" and zoo.local_files(ts) == [str(tmp_path / "net.ts")]
    zoo.validate_zoo_deep([ts])
    with pytest.raises(zoo.ZooError, match="weights 'package'"):
        row(builder=f"torchscript:{tmp_path / 'net.ts'}")
    (tmp_path / "nets.txt").write_text("x")
    with pytest.raises(zoo.ZooError, match="not a TorchScript file"):
        zoo.validate_zoo_deep(
            [row(builder=f"torchscript:{tmp_path / 'nets.txt'}", weights="package")]
        )
    stim, images = _stimuli(tmp_path)
    settings = ExtractSettings(device="cpu", writers=1)
    extract_model(ts, stim, tmp_path / "ts.zarr", settings)
    assert list(list_layers(tmp_path / "ts.zarr")["layer"]) == ["output"]
    got = open_layer(tmp_path / "ts.zarr", "output").values
    with torch.no_grad():
        want = net(make_preprocess(spec)(torch.from_numpy(images))).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_inspect_registry_dispatches_in_order(tmp_path, nwb_paths, synthetic_dir, small_cfg):
    """An NWB 1 file of the synthetic generator, a stimulus store, and a kind added by one
    registry entry (tried before the generic store summary)."""
    s = summarize(nwb_paths[0])
    assert s["kind"] == "allen_nwb1"
    assert (s["cells"], s["images"], s["repeats"]) == (
        small_cfg["cells_per_experiment"], 118, small_cfg["n_repeats"]
    )  # fmt: skip
    assert s["areas"][0] in small_cfg["areas"] and s["cre_lines"][0] in small_cfg["cre_lines"]
    stim, _ = _stimuli(tmp_path)
    assert summarize(stim)["dims"] == {"image": 6, "y": 20, "x": 24}
    SUMMARIZERS.append(
        type(SUMMARIZERS[0])("stim", lambda p: p.name == "stimuli.zarr", lambda p: {"n": 1})
    )
    try:
        assert summarize(stim) == {"kind": "stim", "path": str(stim), "n": 1}
    finally:
        SUMMARIZERS.pop()
    assert "cells: 10" in format_summary(s)
    with pytest.raises(ValueError, match="not a file or store m2m knows"):
        summarize(synthetic_dir / "manifest.tsv")
