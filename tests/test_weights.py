"""Weights cache: hash in the file name, missing and corrupt files, fetching (file:// URLs)."""

import hashlib

import pytest
import torch

from mice2machines.models import weights as W


def _named_weights(tmp_path, name="tiny"):
    """A real state-dict file named like torchvision's: <name>-<sha256 prefix>.pth."""
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    raw = src / "raw.pth"
    torch.save(torch.nn.Linear(3, 2).state_dict(), raw)
    digest = hashlib.sha256(raw.read_bytes()).hexdigest()
    path = src / f"{name}-{digest[:8]}.pth"
    raw.rename(path)
    return path, digest


def test_hash_prefix():
    assert W.hash_prefix("resnet50-11ad3fa6.pth") == "11ad3fa6"
    assert W.hash_prefix("/a/b/efficientnet_b0_rwightman-7f5810bc.pth") == "7f5810bc"
    assert W.hash_prefix("model.pth") is None


def test_verify_good_missing_corrupt(tmp_path):
    path, digest = _named_weights(tmp_path)
    assert W.verify(path) == digest
    with pytest.raises(W.WeightsError) as err:
        W.verify(tmp_path / "nope-12345678.pth", model="resnet50")
    msg = str(err.value)
    assert "missing weights file" in msg and "nope-12345678.pth" in msg
    assert W.FETCH_RULE in msg and "resnet50" in msg
    path.write_bytes(path.read_bytes()[:-5])  # truncated download
    with pytest.raises(W.WeightsError) as err:
        W.verify(path)
    assert "corrupt weights file" in str(err.value) and path.name in str(err.value)
    assert W.FETCH_RULE in str(err.value)


def test_fetch_url_downloads_verifies_and_refetches_corrupt(tmp_path):
    src, digest = _named_weights(tmp_path)
    cache = tmp_path / "cache"
    got = W.fetch_url(src.as_uri(), cache)
    assert got == W.checkpoints_dir(cache) / src.name
    assert W.verify(got) == digest
    mtime = got.stat().st_mtime_ns
    assert W.fetch_url(src.as_uri(), cache).stat().st_mtime_ns == mtime  # cached: no refetch
    got.write_bytes(b"garbage")
    W.fetch_url(src.as_uri(), cache)  # corrupt cache file: fetched again
    assert W.verify(got) == digest
    # a source that does not match its name fails and leaves nothing behind
    bad = src.with_name("other-00000000.pth")
    bad.write_bytes(src.read_bytes())
    with pytest.raises(RuntimeError, match="invalid hash"):
        W.fetch_url(bad.as_uri(), cache)
    assert not (W.checkpoints_dir(cache) / bad.name).exists()


def test_torchvision_names_resolve_offline(tmp_path):
    full = W.torchvision_weights("resnet50", "ResNet50_Weights.IMAGENET1K_V2")
    assert W.torchvision_weights("resnet50", "IMAGENET1K_V2") is full
    assert W.torchvision_weights("resnet50", "DEFAULT") is full
    path = W.torchvision_file("resnet50", "IMAGENET1K_V2", tmp_path)
    assert path == tmp_path / "hub" / "checkpoints" / "resnet50-11ad3fa6.pth"
    for arch, name in [
        ("resnet50", "VGG19_Weights.IMAGENET1K_V1"),
        ("resnet50", "NOPE"),
        ("nonet", "DEFAULT"),
    ]:
        with pytest.raises(W.WeightsError):
            W.torchvision_weights(arch, name)


def test_hub_dir_is_restored(tmp_path):
    before = torch.hub.get_dir()
    with W.hub_dir(tmp_path) as d:
        assert torch.hub.get_dir() == str(d) == str(tmp_path / "hub")
    assert torch.hub.get_dir() == before


def test_offline_efficientnet_lite0_file_verifies():
    path = W.efficientnet_lite0_file()
    assert W.hash_prefix(path) == "57934424"
    assert W.verify(path).startswith("57934424")
