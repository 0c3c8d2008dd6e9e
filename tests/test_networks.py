"""Digit architectures: build, NeuRN in front, shared parameter layout, checkpoints."""

import pytest
import torch

from mice2machines.dg import networks
from mice2machines.neurn import NeuRN


@pytest.mark.parametrize("arch", sorted(networks.ARCHS))
def test_every_arch_classifies_32px_digits_with_and_without_neurn(arch):
    torch.manual_seed(0)
    base = networks.build(arch)
    torch.manual_seed(0)
    with_neurn = networks.build(arch, neurn={"kernel_size": 3})
    x = torch.rand(2, 3, 32, 32)
    for m in (base, with_neurn):
        assert m.eval()(x).shape == (2, 10)
    assert isinstance(base.neurn, torch.nn.Identity)
    assert isinstance(with_neurn.neurn, NeuRN) and with_neurn.neurn.kernel_size == 3
    # NeuRN has no parameters: same keys and, from one seed, the same initial weights
    sa, sb = base.state_dict(), with_neurn.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_stems_are_adapted_to_32px():
    assert networks.build("resnet18").body.conv1.stride == (1, 1)
    assert isinstance(networks.build("resnet18").body.maxpool, torch.nn.Identity)
    assert networks.build("mnasnet").body.layers[0].stride == (1, 1)
    assert networks.build("mobilenet_v3").body.features[0][0].stride == (1, 1)
    assert networks.build("efficientnet_b0").body.features[0][0].stride == (1, 1)
    assert networks.build("vit").body.image_size == 32


def test_neurn_in_front_removes_intensity_offset_and_contrast():
    torch.manual_seed(0)
    m = networks.build("small_cnn", neurn=True).eval()
    x = torch.rand(4, 3, 32, 32, dtype=torch.float64)
    m = m.double()
    with torch.no_grad():
        a, b = m(x), m(0.4 * x + 0.3)  # darker, lower contrast, brighter background
    torch.testing.assert_close(a, b)
    base = networks.build("small_cnn").eval().double()
    with torch.no_grad():
        assert not torch.allclose(base(x), base(0.4 * x + 0.3))


def test_checkpoint_round_trip(tmp_path):
    torch.manual_seed(1)
    m = networks.build("small_cnn", neurn={"kernel_size": 5, "max_over": "channel"}).eval()
    path = networks.save_checkpoint(m, tmp_path / "ck.pt", epoch=3, val_acc=0.9)
    rec = networks.read_checkpoint(path)
    assert rec["arch"] == "small_cnn" and rec["epoch"] == 3 and rec["num_classes"] == 10
    assert rec["neurn"] == {"kernel_size": 5, "max_over": "channel"}
    back = networks.load_checkpoint(path)
    assert not back.training and back.neurn.max_over == "channel"
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(m(x), back(x))
    assert not list(tmp_path.glob(".*tmp*"))  # atomic write leaves no temporary file


def test_checkpoint_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        networks.load_checkpoint(tmp_path / "missing.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="bad.pt"):
        networks.load_checkpoint(bad)
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="other.pt.*arch"):
        networks.read_checkpoint(tmp_path / "other.pt")


def test_unknown_arch_and_bad_neurn():
    with pytest.raises(ValueError, match="unknown arch"):
        networks.build("alexnet")
    with pytest.raises(TypeError):
        networks.build("small_cnn", neurn=5)


def test_arch_registry_fills_the_config_schema():
    from mice2machines import settings
    from mice2machines.dg import jobs

    assert tuple(networks.ARCHS) == jobs.ARCHS
    assert settings.schema("dg")["$defs"]["arch"]["enum"] == list(jobs.ARCHS)
