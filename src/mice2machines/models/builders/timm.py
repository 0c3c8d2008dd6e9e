"""``timm:<name>``: timm's models (any ``timm.list_models()`` name, with an optional
``.<tag>`` naming its pretrained weights). Weights ``random`` or ``pretrained``: the local
rule fetch_weights fetches them through timm's own loaders into ``<weights_dir>/timm``
(huggingface_hub's cache for Hub weights, the file itself for URL weights); jobs load the
verified file from there with no network. Preprocess ``model`` (the default of timm rows):
the mean and std of timm's data config for the model (geometry stays the row's ``resize``
and ``input_size``, bilinear)."""

from __future__ import annotations

import os
from pathlib import Path

from ..zoo import ZooError, register_builder


def cache_dir(weights_dir) -> Path:
    """Where timm/huggingface_hub keep this project's timm weights."""
    return Path(weights_dir) / "timm"


def _pretrained_cfg(spec):
    import timm

    if not timm.is_model(spec.arch):
        raise ZooError(f"timm has no model {spec.arch!r} (see timm.list_models())")
    try:
        return timm.models.get_pretrained_cfg(spec.arch)
    except RuntimeError as err:
        raise ZooError(f"timm: {err}") from None


def source(spec) -> tuple[str, object, str]:
    """(kind 'hf-hub' | 'url', location, a URL to name in messages) of a row's weights."""
    from huggingface_hub import constants
    from timm.models._builder import _resolve_pretrained_source

    cfg = _pretrained_cfg(spec)
    kind, loc = _resolve_pretrained_source(cfg.to_dict()) if cfg is not None else ("", "")
    if kind == "hf-hub":
        repo = loc[0] if isinstance(loc, tuple) else loc
        return kind, loc, f"{constants.ENDPOINT}/{repo}"
    if kind == "url":
        return kind, loc, str(loc)
    raise ZooError(f"timm model {spec.arch!r} has no pretrained weights to fetch")


def named_file(spec, weights_dir) -> Path:
    """The cached weights file of a ``pretrained`` row (no network); WeightsError if absent."""
    from .. import weights as W

    kind, loc, url = source(spec)
    cache = cache_dir(weights_dir)
    if kind == "url":
        return cache / os.path.basename(str(loc).split("?")[0])
    from huggingface_hub import try_to_load_from_cache
    from timm.models._hub import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME, hf_split

    repo, names = (loc, None) if isinstance(loc, str) else loc
    repo, revision = hf_split(repo) if names is None else (repo, None)
    for name in [names] if names else [HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME]:
        found = try_to_load_from_cache(repo, name, cache_dir=cache, revision=revision)
        if isinstance(found, str):
            return Path(found)
    raise W.WeightsError(
        f"model {spec.name!r}: timm weights of {spec.arch!r} (Hugging Face repo {repo}, "
        f"{url}) are not in the cache {cache}. {W._hint(spec.name)}"
    )


def fetch(spec, weights_dir, progress: bool = False) -> Path:
    """Fetch the weights through timm (login node); WeightsError naming model and URL."""
    import timm

    from .. import weights as W

    kind, _, url = source(spec)
    try:
        timm.create_model(spec.arch, pretrained=True, cache_dir=cache_dir(weights_dir))
    except Exception as err:  # network, HTTP and cache errors of timm/huggingface_hub
        raise W.WeightsError(
            f"model {spec.name!r}: could not fetch timm weights of {spec.arch!r} from {url} "
            f"({kind}): {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        ) from None
    return named_file(spec, weights_dir)


def build(arch, pretrained, spec, weights_dir):
    """The network: random, or timm's pretrained weights from the verified cached file."""
    import timm

    if pretrained is None:
        return timm.create_model(arch, pretrained=False)
    path = named_file(spec, weights_dir)
    return timm.create_model(arch, pretrained=True, pretrained_cfg_overlay={"file": str(path)})


def data_config(spec) -> tuple[int, tuple, tuple]:
    """(channels, mean, std) of timm's data config for the model."""
    from timm.data import resolve_data_config

    cfg = _pretrained_cfg(spec)
    conf = resolve_data_config({}, pretrained_cfg=cfg.to_dict() if cfg is not None else {})
    return int(conf["input_size"][0]), tuple(conf["mean"]), tuple(conf["std"])


def validate(spec) -> None:
    """The model (and tag) exist in the installed timm; pretrained rows have a source."""
    _pretrained_cfg(spec)
    if spec.weights_kind == "named":
        source(spec)


register_builder(
    "timm",
    build,
    validate=validate,
    named_file=named_file,
    named_weights=("pretrained",),
    fetch=fetch,
    data_config=data_config,
    defaults={"preprocess": "model"},
)


#: the timm part of the large zoo, by family: (layers, architectures with the tag of their
#: ImageNet-1k weights). Families that mouse-cortex comparisons use and torchvision lacks.
#: Layers: transformer and MLP families hook their blocks, not every attention projection;
#: MobileViT its convolutions and blocks (its attention runs on patch-batched tokens, which
#: would not lead with the image). Swin and TinyViT blocks are channels-last (y, x, channel).
LARGE_ZOO = {
    "resnet": ("default", ("resnet18d.ra2_in1k", "resnet50d.ra2_in1k",
                           "seresnext26d_32x4d.bt_in1k")),
    "resnetv2": ("default", ("resnetv2_50.a1h_in1k",)),
    "resnest": ("default", ("resnest14d.gluon_in1k",)),
    "res2net": ("default", ("res2net50_26w_4s.in1k",)),
    "cspnet": ("default", ("cspdarknet53.ra_in1k", "cspresnet50.ra_in1k")),
    "dla": ("default", ("dla34.in1k",)),
    "hrnet": ("default", ("hrnet_w18_small.ms_in1k",)),
    "dpn": ("default", ("dpn68b.ra_in1k",)),
    "xception": ("default", ("xception41p.ra3_in1k",)),
    "inception_v4": ("default", ("inception_v4.tf_in1k",)),
    "regnetz": ("default", ("regnetz_b16.ra3_in1k",)),
    "efficientnetv2": ("default", ("tf_efficientnetv2_b0.in1k", "efficientnetv2_rw_t.ra2_in1k")),
    "mobilenetv4": ("default", ("mobilenetv4_conv_small.e2400_r224_in1k",
                                "mobilenetv4_hybrid_medium.e500_r224_in1k")),
    "ghostnet": ("default", ("ghostnet_100.in1k", "ghostnetv2_100.in1k")),
    "rexnet": ("default", ("rexnet_100.nav_in1k",)),
    "repvit": ("default", ("repvit_m1_0.dist_300e_in1k",)),
    "convnext": ("default", ("convnext_atto.d2_in1k", "convnext_nano.d1h_in1k",
                             "convnextv2_nano.fcmae_ft_in1k")),
    "poolformer": ("default", ("poolformer_s12.sail_in1k",)),
    "edgenext": ("default", ("edgenext_x_small.in1k",)),
    "fastvit": ("default", ("fastvit_t8.apple_in1k",)),
    "vit": ("types:PatchEmbed,Block", ("vit_tiny_patch16_224.augreg_in21k_ft_in1k",
                                       "vit_small_patch16_224.augreg_in1k")),
    "deit": ("types:PatchEmbed,Block", ("deit_tiny_patch16_224.fb_in1k",
                                        "deit_small_patch16_224.fb_in1k",
                                        "deit3_small_patch16_224.fb_in1k")),
    "swin": ("types:PatchEmbed,SwinTransformerBlock", ("swin_tiny_patch4_window7_224.ms_in1k",)),
    "mixer": ("types:PatchEmbed,MixerBlock", ("mixer_b16_224.goog_in21k_ft_in1k",)),
    "levit": ("types:ConvNorm,LevitBlock,LevitDownsample", ("levit_128s.fb_dist_in1k",)),
    "pvt_v2": ("types:PyramidVisionTransformerStage,Block", ("pvt_v2_b0.in1k",)),
    "tiny_vit": ("types:PatchEmbed,MBConv,TinyVitBlock", ("tiny_vit_5m_224.in1k",)),
    "coatnet": ("types:Stem,MbConvBlock,TransformerBlock2d", ("coatnet_0_rw_224.sw_in1k",)),
    "mobilevit": ("types:Conv2d,MobileVitBlock", ("mobilevit_xs.cvnets_in1k",)),
}  # fmt: skip


def large_zoo_rows() -> list[dict]:
    """Zoo rows of `LARGE_ZOO`, pretrained and its random twin (the same tagged builder, so
    both get the same mean and std); input size = the weights' input size."""
    import timm

    rows = []
    for layers, archs in LARGE_ZOO.values():
        for arch in archs:
            cfg = timm.models.get_pretrained_cfg(arch)
            base = {"builder": f"timm:{arch}", "input_size": int(cfg.input_size[-1])}
            base.update(preprocess="model", resize="squash", layers=layers, neurn="none")
            name = arch.split(".")[0]
            rows.append({"name": name, "weights": "pretrained", **base})
            rows.append({"name": f"{name}_random", "weights": "random", **base})
    return rows
