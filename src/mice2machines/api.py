"""Score a network on neural data in one call: the workflow's stages as functions.

``score`` runs what the rules extract_activations, compare_prepare, compare_select and
compare_model run, through the same functions and with the same settings (the rules' params,
`workflow_params.job_settings`), writing the same intermediate stores under ``workdir``
(laid out like ``results/``: ``activations/<model>.zarr``, ``compare/neural.zarr``,
``compare/selected_neurons.tsv``). So a model scored here and by the workflow on the same
population, stimuli and config gives identical numbers.

    import mice2machines as m2m
    ds = m2m.score("timm:resnet10t", "results/neural/population.zarr", metrics=["rsa_pearson"])
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import xarray as xr

from .io import open_zarr, provenance, write_zarr_atomic
from .settings import SECTIONS, ConfigError, defaults, validate_config

log = logging.getLogger("mice2machines")

#: default columns of a model given as a builder string or an nn.Module
ROW_DEFAULTS = {"weights": "random", "input_size": "224"}


def load_config(config=None, metrics=None, **cfg) -> dict:
    """A full, validated config: ``config`` (a dict or a YAML file, e.g. the workflow's
    config/config.yaml), then sections given as keywords (``models={...}``), then flat keys
    of the compare section, else of the models section (``n_perm=10``, ``batch_size=8``)."""
    import copy

    import yaml

    if isinstance(config, str | os.PathLike):
        config = yaml.safe_load(Path(config).read_text()) or {}
    out = copy.deepcopy(dict(config or {}))
    out.setdefault("source", "synthetic")
    compare_keys, models_keys = defaults("compare"), defaults("models")
    for key, value in cfg.items():
        if key in SECTIONS and isinstance(value, Mapping):
            out[key] = {**(out.get(key) or {}), **value}
        elif key in compare_keys or key in models_keys:
            name = "compare" if key in compare_keys else "models"
            out[name] = {**(out.get(name) or {}), key: value}
        else:
            raise ConfigError(f"score: {key!r} is not a config section nor a compare/models key")
    if metrics is not None:
        out["compare"] = {**(out.get("compare") or {}), "metrics": list(metrics)}
    return validate_config(out)


def _name_of(text: str) -> str:
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_.-")
    return name or "model"


def parse_row(text: str, row: Mapping | str | None = None, table=None):
    """A `zoo.ModelSpec` from a models-table row string: the name of a row of ``table``; a
    tab-separated row; or ``<builder>[,column=value...]`` (``timm:resnet10t,input_size=64``;
    name, weights and input_size default to the builder's arch, ``random`` and 224).
    ``row``: more column values (a dict or ``column=value,...``), over the string's own."""
    from .models import zoo

    extra = _columns(row)
    if table is not None and Path(table).is_file() and "\t" not in text and ":" not in text:
        specs = {s.name: s for s in zoo.read_zoo(table)}
        if text not in specs:
            raise zoo.ZooError(f"{table} has no model {text!r}; models: {sorted(specs)}")
        return zoo.spec_from_values({**specs[text].to_dict(), **extra})
    if "\t" in text:
        values = dict(zip(zoo.COLUMNS, (v.strip() for v in text.split("\t")), strict=False))
    else:
        builder, *rest = text.split(",")
        values = {"builder": builder.strip(), **_columns(",".join(rest))}
    values = {k: str(v) for k, v in {**values, **extra}.items() if str(v) != ""}
    values.setdefault("name", _name_of(values["builder"].split(":", 1)[-1]))
    return zoo.spec_from_values({**ROW_DEFAULTS, **values})


def _columns(row) -> dict:
    if row is None or row == "":
        return {}
    if isinstance(row, Mapping):
        return {k: str(v) for k, v in row.items()}
    pairs = [p.partition("=") for p in str(row).split(",") if p.strip()]
    bad = [k for k, sep, _ in pairs if not sep]
    if bad:
        raise ValueError(f"model columns: expected column=value, got {bad}")
    return {k.strip(): v.strip() for k, _, v in pairs}


def model_spec(model, row=None, layers=None, table=None):
    """(ModelSpec, built network or None) of ``model``: a row string, a ModelSpec or an
    nn.Module (then ``row`` gives its name, input_size, preprocess ...; a ModelSpec row
    with builder ``module:<its class>``). ``layers``: names (a list) or a layers column."""
    from .models import zoo

    net = None
    if isinstance(model, zoo.ModelSpec):
        spec = zoo.spec_from_values({**model.to_dict(), **_columns(row)})
    elif isinstance(model, str):
        spec = parse_row(model, row, table)
    else:
        from torch import nn

        if not isinstance(model, nn.Module):
            raise TypeError(f"model: a row string, a ModelSpec or an nn.Module, not {model!r}")
        cls = type(model)
        values = {"builder": f"module:{cls.__module__}:{cls.__qualname__}", **_columns(row)}
        values.setdefault("name", _name_of(cls.__name__.lower()))
        spec, net = zoo.spec_from_values({**ROW_DEFAULTS, **values}), model
    if layers is not None:
        column = layers if isinstance(layers, str) else "names:" + ",".join(layers)
        spec = zoo.spec_from_values({**spec.to_dict(), "layers": column})
    return spec, net


def _stimuli_store(stimuli, neural, workdir: Path) -> Path:
    """The stimulus store to read: a path, an array written into ``workdir``, or the
    workflow's ``results/stimuli.zarr`` next to a ``results/neural/population.zarr``."""
    from .neural.population import stimuli_dataset

    if stimuli is None and isinstance(neural, str | os.PathLike):
        guess = Path(neural).resolve().parent.parent / "stimuli.zarr"
        if guess.exists():
            return guess
    if stimuli is None:
        raise ValueError("score: give stimuli (a stimuli.zarr store or an (image, y, x) array)")
    if isinstance(stimuli, str | os.PathLike):
        return Path(stimuli)
    images = stimuli["images"] if isinstance(stimuli, xr.Dataset) else stimuli
    out = workdir / "stimuli.zarr"
    write_zarr_atomic(stimuli_dataset(np.asarray(images), "array", provenance()), out)
    return out


def _job_cfg(rule: str, config: dict) -> dict:
    """A rule's settings as its script reads them (the params' JSON, parsed)."""
    from .workflow_params import job_params

    return json.loads(job_params(rule, config))


def extract(spec, stimuli, out, config: dict, net=None):
    """The extract_activations job of one model (``net``: a network built already)."""
    from .models.extract import ExtractSettings, extract_model
    from .workflow_params import job_params, run_settings

    cfg = json.loads(job_params("extract_activations", config, spec=spec.to_dict()))
    models = config["models"]
    settings = ExtractSettings.from_config({**cfg, **run_settings("models", config)})
    return extract_model(
        spec, stimuli, out, settings, weights_dir=models["weights_dir"],
        layer_types=cfg["layer_types"], seed=cfg["seed"], model=net,
    )  # fmt: skip


def compare(activations, population, stimuli, config: dict, model: str, workdir: Path):
    """compare_prepare, compare_select and compare_model of one activation store."""
    from .compare import job, prepare, selection
    from .workflow_params import run_settings

    cmp = Path(workdir) / "compare"
    neural_path, table_path = cmp / "neural.zarr", cmp / "selected_neurons.tsv"
    pop = open_zarr(population) if isinstance(population, str | os.PathLike) else population
    cfg = _job_cfg("compare_prepare", config)
    ds = prepare.prepare_neural(pop, open_zarr(stimuli), {**cfg, **run_settings("compare", config)})
    inputs = {"stimuli": str(stimuli)}
    if isinstance(population, str | os.PathLike):
        inputs["population"] = str(population)
    ds.attrs["provenance"] = provenance(config=cfg, inputs=prepare.input_hashes(inputs))
    write_zarr_atomic(ds, neural_path)
    table = selection.selection_table(open_zarr(neural_path), _job_cfg("compare_select", config))
    table.to_csv(table_path, sep="\t", index=False)
    cfg = {**_job_cfg("compare_model", config), **run_settings("compare", config)}
    neural = open_zarr(neural_path).load()
    selected = prepare.read_selected(table_path, neural)
    out = job.compare_model(activations, neural, selected, cfg, model=model)
    inputs = {"neural": str(neural_path), "selected": str(table_path), "activations": activations}
    out.attrs["provenance"] = provenance(config=cfg, inputs=prepare.input_hashes(inputs))
    return out


def score(
    model,
    neural,
    stimuli=None,
    layers: Sequence[str] | str | None = None,
    metrics: Sequence[str] | None = None,
    *,
    row: Mapping | str | None = None,
    config: Mapping | str | os.PathLike | None = None,
    workdir: str | os.PathLike | None = None,
    out: str | os.PathLike | None = None,
    **cfg,
) -> xr.Dataset:
    """Every metric of a model's layers against every neural group: the Dataset the
    workflow's compare_model writes (dims metric, group, layer, ...).

    model: a models-table row string (``timm:resnet10t``, ``module:nets.py:make_net``, a
    row name of ``models.table``, a tab-separated row), a `zoo.ModelSpec` or an nn.Module.
    neural: a population store (path or Dataset: responses (cell, image, repeat) and cell
    coords). stimuli: a stimulus store or an (image, y, x) 0-255 array; by default the
    ``stimuli.zarr`` of the workflow's results next to a population path. layers: module
    names or a layers column (``types:Conv2d``); metrics: compare.metrics. row: more model
    columns (``input_size=64``). config, cfg: settings (see `load_config`). workdir: keep
    the intermediate stores there (else a temporary folder); out: also write the store.
    """
    config = load_config(config, metrics, **cfg)
    spec, net = model_spec(model, row, layers, config["models"]["table"])
    with tempfile.TemporaryDirectory(prefix="m2m-score-") as tmp:
        work = Path(workdir) if workdir is not None else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        stim = _stimuli_store(stimuli, neural, work)
        act = work / "activations" / f"{spec.name}.zarr"
        extract(spec, stim, act, config, net)
        ds = compare(str(act), neural, stim, config, spec.name, work).load()
    if out is not None:
        write_zarr_atomic(ds, out)
    return ds


# ---------------------------------------------------------------- the workflow's stores


def open_population(path: str | os.PathLike) -> xr.Dataset:
    """``results/neural/population.zarr`` (or an experiment store): responses (cell, image,
    repeat), blank_responses, reliability and the cell coords, lazily."""
    return open_zarr(path)


def open_stimuli(path: str | os.PathLike) -> xr.Dataset:
    """``results/stimuli.zarr``: images (image, y, x) 0-255."""
    return open_zarr(path)


def open_activations(path: str | os.PathLike, layer: str | None = None):
    """``results/activations/<model>.zarr``: its layer table, or one layer's activations
    (a lazy DataArray (image, channel, y, x) or (image, unit))."""
    from .models.store import list_layers, open_layer

    return list_layers(path) if layer is None else open_layer(path, layer)


def open_scores(path: str | os.PathLike) -> xr.Dataset:
    """``results/compare/models/<model>.zarr`` (one model) or ``results/compare/scores.zarr``
    (every model), lazily."""
    return open_zarr(path)
