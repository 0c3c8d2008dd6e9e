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


#: layer selection of the transformer families (the default Conv2d/Linear would hook every
#: attention projection): ViT's encoder blocks (tokens flattened to units), Swin's blocks
#: (channels-last (y, x, channel) outputs), MaxViT's layers
FAMILY_LAYERS = {
    "vit_": "types:Conv2d,EncoderBlock",
    "swin_": "types:Conv2d,SwinTransformerBlock",
    "maxvit_": "types:Conv2d,MaxVitLayer",
}


def pretrained_weights(arch: str):
    """The weights a large-zoo row uses: IMAGENET1K_V1 where it exists, else the 224-px
    SWAG linear-probe weights (their network is the random twin's: SWAG end-to-end weights
    change ViT's image size)."""
    from torchvision import models

    enum = models.get_model_weights(arch)
    names = [w.name for w in enum]
    for name in ("IMAGENET1K_V1", "IMAGENET1K_SWAG_LINEAR_V1"):
        if name in names:
            return enum[name]
    raise ZooError(f"torchvision {arch!r}: no ImageNet-1k V1 or SWAG linear weights")


def large_zoo_rows() -> list[dict]:
    """Zoo rows of every torchvision classification builder, pretrained and its random twin;
    input size = the weights' crop size (config/models_large.tsv)."""
    from torchvision import models

    rows = []
    for arch in models.list_models(module=models):
        w = pretrained_weights(arch)
        layers = next((v for k, v in FAMILY_LAYERS.items() if arch.startswith(k)), "default")
        base = {"builder": f"torchvision:{arch}", "input_size": int(w.transforms().crop_size[0])}
        base.update(preprocess="imagenet", resize="squash", layers=layers, neurn="none")
        rows.append({"name": arch, "weights": f"{type(w).__name__}.{w.name}", **base})
        rows.append({"name": f"{arch}_random", "weights": "random", **base})
    return rows


register_builder("torchvision", build, validate=validate)
