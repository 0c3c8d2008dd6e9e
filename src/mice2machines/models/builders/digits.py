"""``digits:<arch>``: this project's DG networks (`mice2machines.dg.networks`). They take
(B, 3, H, W) in [0, 1] and centre and apply NeuRN themselves; ``ckpt:`` weights are this
project's training checkpoints."""

from __future__ import annotations

from ..zoo import ZooError, register_builder


def _networks():
    try:
        from ...dg import networks
    except ImportError as err:
        raise ZooError(f"digits models need mice2machines.networks ({err})") from err
    return networks


def build(arch, pretrained, spec, weights_dir):
    """The network with the row's NeuRN settings (so its state-dict keys match training)."""
    return _networks().build(arch, neurn=spec.neurn_config)


def load_ckpt(path):
    """(network, checkpoint record) of a training checkpoint."""
    networks = _networks()
    return networks.load_checkpoint(path), networks.read_checkpoint(path)


register_builder("digits", build, owns_neurn=True, load_ckpt=load_ckpt, preprocess="unit")
