"""``torchvision:<function>``: torchvision's model builders, random or with its weights."""

from __future__ import annotations

from ..zoo import ZooError, register_builder

# Random twins get the constructor settings torchvision applies with pretrained weights, so that
# both twins have the same modules and input transform.
RANDOM_TWIN_KWARGS = {
    "inception_v3": {"transform_input": True, "aux_logits": True, "init_weights": True},
    "googlenet": {"transform_input": True, "aux_logits": False, "init_weights": True},
}


def build(arch, pretrained, spec, weights_dir):
    """The network, with the named weights from the offline cache under ``weights_dir``."""
    from torchvision import models

    from .. import weights as W

    if pretrained is None:
        return models.get_model(arch, weights=None, **RANDOM_TWIN_KWARGS.get(arch, {}))
    enum = W.torchvision_weights(arch, pretrained)
    with W.hub_dir(weights_dir):
        return models.get_model(arch, weights=enum)


def validate(spec) -> None:
    """The architecture and the weights name exist in the installed torchvision."""
    from torchvision import models

    from .. import weights as W

    if spec.arch not in models.list_models():
        raise ZooError(f"{spec.name}: torchvision has no model {spec.arch!r}")
    if spec.weights_kind == "torchvision":
        W.torchvision_weights(spec.arch, spec.weights)


register_builder("torchvision", build, validate=validate)
