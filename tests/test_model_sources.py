"""Model sources beyond torchvision: timm, a user's module factory, TorchScript files, local
state dicts; deep validation of rows; the summaries behind ``m2m inspect``."""

import hashlib
import http.server
import json
import os
import subprocess
import sys
import threading

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


class _Hub(http.server.BaseHTTPRequestHandler):
    """A Hugging Face endpoint on loopback serving one repo's model.safetensors."""

    body = b""

    def _head(self) -> bool:
        if not self.path.endswith("/timm/resnet10t.c3_in1k/resolve/main/model.safetensors"):
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return False
        self.send_response(200)
        self.send_header("X-Repo-Commit", "a" * 40)
        self.send_header("ETag", f'"{hashlib.sha256(self.body).hexdigest()}"')
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        return True

    def do_HEAD(self):
        self._head()

    def do_GET(self):
        if self._head():
            self.wfile.write(self.body)

    def log_message(self, *args):
        pass


FETCH_AND_LOAD = """
import json, sys
from mice2machines.models import zoo
spec = zoo.spec_from_values(
    dict(name="r10p", builder="timm:resnet10t", weights="pretrained", input_size="32")
)
record = zoo.fetch_weights(spec, sys.argv[1]) if sys.argv[2] == "fetch" else None
model, digest = zoo.load_model(spec, sys.argv[1])
print(json.dumps({"record": record, "digest": digest, "state": zoo.state_sha256(model)}))
"""


def test_timm_pretrained_weights_fetched_through_the_hub_cache_then_loaded_offline(tmp_path):
    """fetch_weights goes through timm and huggingface_hub (a loopback Hub); with the server
    gone and the Hub offline, a job loads exactly the served weights from the cache."""
    from safetensors.torch import save_file

    torch.manual_seed(7)
    served = zoo.build_model(row(builder="timm:resnet10t"))
    save_file({k: v.contiguous() for k, v in served.state_dict().items()}, tmp_path / "w.st")
    _Hub.body = (tmp_path / "w.st").read_bytes()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = {**os.environ, "HF_ENDPOINT": f"http://127.0.0.1:{server.server_address[1]}"}
    cache = str(tmp_path / "weights")
    run = [sys.executable, "-W", "ignore", "-c", FETCH_AND_LOAD, cache]
    try:
        fetched = subprocess.run([*run, "fetch"], env=env, capture_output=True, text=True)
    finally:
        server.shutdown()
    assert fetched.returncode == 0, fetched.stderr[-2000:]
    record = json.loads(fetched.stdout.splitlines()[-1])["record"]
    assert "/timm/models--timm--resnet10t.c3_in1k/snapshots/" in record["path"]
    assert record["sha256"] == hashlib.sha256(_Hub.body).hexdigest()
    offline = subprocess.run(
        [*run, "load"], env={**env, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True
    )
    assert offline.returncode == 0, offline.stderr[-2000:]
    loaded = json.loads(offline.stdout.splitlines()[-1])
    assert loaded["digest"] == record["sha256"] and loaded["state"] == zoo.state_sha256(served)
