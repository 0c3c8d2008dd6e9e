"""What a file or store holds, for ``m2m inspect`` and ``m2m validate``.

A registry of (detector, summarizer) pairs, tried in order: the first whose
``detect(path)`` is true summarizes the path into a dict. A neural source gives ``kind``,
``cells``, ``images``, ``repeats`` (the most presentations of one image), ``areas`` and
``cre_lines``; a result store its ``dims`` and variables. Adding a source is one
`register_summarizer` call (or one `Summarizer` in `SUMMARIZERS`); any other zarr store
falls through to `FALLBACK` (dims and variables)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Summarizer:
    """``detect(path) -> bool`` (cheap, never raises), ``summarize(path) -> dict``."""

    name: str
    detect: Callable[[Path], bool]
    summarize: Callable[[Path], dict]


SUMMARIZERS: list[Summarizer] = []


def register_summarizer(name: str, detect, summarize, first: bool = False) -> None:
    """Add a kind of file or store; ``first``: try it before the others."""
    entry = Summarizer(name, detect, summarize)
    SUMMARIZERS.insert(0, entry) if first else SUMMARIZERS.append(entry)


def summarize(path: str | os.PathLike) -> dict:
    """The summary of the first summarizer that recognises ``path``."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    for s in [*SUMMARIZERS, FALLBACK]:
        if s.detect(path):
            return {"kind": s.name, "path": str(path), **s.summarize(path)}
    kinds = ", ".join(s.name for s in [*SUMMARIZERS, FALLBACK])
    raise ValueError(f"{path}: not a file or store m2m knows (kinds: {kinds})")


def format_summary(summary: dict) -> str:
    """One ``key: value`` line per entry (lists joined with commas)."""
    lines = []
    for key, value in summary.items():
        if isinstance(value, dict):
            value = "; ".join(f"{k} {v}" for k, v in value.items())
        elif isinstance(value, list | tuple):
            value = ", ".join(map(str, value))
        lines.append(f"{key}: {value}")
    return "\n".join(lines)


def _labels(values) -> list[str]:
    from .io import as_str

    return sorted({str(v) for v in as_str(np.asarray(values)).ravel()})


# ---------------------------------------------------------------- Allen NWB 1


def is_nwb1(path: Path) -> bool:
    import h5py

    from .neural.nwb import PIPELINE

    try:
        with h5py.File(path, "r") as f:
            return PIPELINE in f
    except (OSError, ValueError):
        return False


def nwb1_summary(path: Path) -> dict:
    """Cells, presented images and their repeats, area and Cre line of one session."""
    from .neural.nwb import read_session

    s = read_session(path)
    frames = s.stimulus["frame"].to_numpy()
    counts = np.bincount(frames[frames >= 0], minlength=s.n_templates)
    shown = counts[counts > 0]
    return {
        "experiments": [s.experiment_id],
        "cells": s.n_cells,
        "images": int(len(shown)),
        "repeats": int(shown.max()) if len(shown) else 0,
        "min_repeats": int(shown.min()) if len(shown) else 0,
        "blanks": int((frames < 0).sum()),
        "areas": [s.area],
        "cre_lines": [s.cre_line],
    }


# ---------------------------------------------------------------- zarr stores


def _is_zarr(path: Path) -> bool:
    return path.is_dir() and (path / "zarr.json").is_file()


def _root_attrs(path: Path) -> dict:
    try:
        return json.loads((path / "zarr.json").read_text()).get("attributes", {})
    except (OSError, ValueError):
        return {}


def is_neural_store(path: Path) -> bool:
    """A population or experiment store: responses (cell, image, repeat)."""
    if not _is_zarr(path):
        return False
    meta = path / "responses" / "zarr.json"
    try:
        dims = json.loads(meta.read_text()).get("dimension_names")
    except (OSError, ValueError):
        return False
    return dims == ["cell", "image", "repeat"]


def neural_store_summary(path: Path) -> dict:
    from .io import open_zarr

    ds = open_zarr(path)
    out = {"cells": ds.sizes["cell"], "images": ds.sizes["image"], "repeats": ds.sizes["repeat"]}
    if "experiment_id" in ds.coords:
        out["experiments"] = len(np.unique(ds["experiment_id"].values))
    if "mouse" in ds.coords:
        out["mice"] = len(np.unique(ds["mouse"].values))
    for key, coord in (("areas", "area"), ("cre_lines", "cre_line"), ("ei_classes", "ei_class")):
        if coord in ds.coords:
            out[key] = _labels(ds[coord].values)
    return out


def is_activation_store(path: Path) -> bool:
    attrs = _root_attrs(path) if _is_zarr(path) else {}
    return "layers" in attrs and "cache_key" in attrs


def activation_summary(path: Path) -> dict:
    from .models.store import list_layers

    table = list_layers(path)
    key = _root_attrs(path)["cache_key"]
    stored = table[table["stored"]]
    return {
        "model": key.get("model"),
        "builder": key.get("builder"),
        "weights": key.get("weights"),
        "images": (key.get("stimuli_shape") or ["?"])[0],
        "layers": len(table),
        "stored_layers": len(stored),
        "units": int(stored["features"].sum()),
    }


def is_result_store(path: Path) -> bool:
    return _is_zarr(path)


def result_summary(path: Path) -> dict:
    """Dims and variables (with their dims) of any other store of the workflow."""
    from .io import open_zarr

    ds = open_zarr(path)
    out = {
        "dims": dict(ds.sizes),
        "variables": {name: ",".join(map(str, v.dims)) for name, v in ds.data_vars.items()},
    }
    for coord in ("metric", "group", "model"):
        if coord in ds.coords:
            out[f"{coord}s"] = [str(v) for v in ds[coord].values]
    return out


register_summarizer("allen_nwb1", is_nwb1, nwb1_summary)
register_summarizer("neural_store", is_neural_store, neural_store_summary)
register_summarizer("activations", is_activation_store, activation_summary)
#: every other zarr store of the workflow, tried after the registered kinds
FALLBACK = Summarizer("result_store", is_result_store, result_summary)
