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
