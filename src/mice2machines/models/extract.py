"""Activations of chosen layers for a stimulus set, streamed into one zarr store per model.

How a store is made (``extract``):

1. In-place modules (``ReLU(inplace=True)`` ...) are switched to out-of-place, and every hook
   copies its output at hook time, so later in-place ops (``out += identity``) cannot change
   what was captured.
2. A probe forward on the first images records every call of every chosen module (a module
   called twice gives ``name`` and ``name@1``), its shape, and a hash of its output: a layer
   whose output is byte-identical to an earlier one (Dropout/Identity in eval mode, a ReLU of
   a ReLU, ...) is marked ``duplicate_of`` and not stored. Later batches re-check each
   duplicate with an exact fingerprint.
3. Preflight: the store size (uncompressed) and host memory are estimated; the job fails at
   once over ``max_store_gb``, over the free disk, or when even one image per batch exceeds
   ``max_memory_gb``; the batch is shrunk to fit otherwise.
4. Images go through the model in batches; hooks copy each layer's slice straight into a
   host staging buffer (pinned, asynchronous on GPU); a pool of writer threads writes it into
   preallocated zarr arrays (chunks aligned with batches) while the next batch runs. Memory
   holds at most two batches of the stored layers.
5. Everything is written to a temporary sibling path and renamed at the end.

Store layout: root attrs ``layers`` (the layer table), ``cache_key``, ``cache_key_sha256``,
``provenance``; one group per stored layer holding the xarray variable ``activations`` with
dims (image, channel, y, x) for 4-D outputs, else (image, unit) (other shapes are flattened),
and the coordinate ``image``. Read with ``list_layers`` and ``open_layer``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..io import CONVENTIONS, atomic_path, consolidate
from ..preflight import PreflightError, free_disk
from ..settings import defaults
from .hooks import (
    ExtractionError,
    Recorder,
    _fingerprint,
    make_out_of_place,
    probe,
    select_layers,
)
from .store import COMPRESSORS, _ChunkFiles, _create_store, _json_table, _stored_shape

log = logging.getLogger("mice2machines")

PRECISIONS = ("fp32", "bf16")


STORE_DTYPES = {"float32": torch.float32, "float16": torch.float16}


#: the models section's defaults and their documentation: schemas/models.schema.yaml
_MODELS = defaults("models")


@dataclass
class ExtractSettings:
    """Knobs of one extraction (config section ``models``)."""

    batch_size: int = _MODELS["batch_size"]  # lowered automatically to fit max_memory_gb
    precision: str = _MODELS["precision"]  # bf16: autocast on the model, not preprocessing
    store_dtype: str = _MODELS["store_dtype"]
    compressor: str = _MODELS["compressor"]
    chunk_mb: float = _MODELS["chunk_mb"]
    max_store_gb: float = _MODELS["max_store_gb"]
    max_memory_gb: float = _MODELS["max_memory_gb"]
    device: str = _MODELS["device"]
    writers: int = _MODELS["writers"]
    probe_images: int = _MODELS["probe_images"]

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.store_dtype not in STORE_DTYPES:
            raise ValueError(f"store_dtype must be one of {list(STORE_DTYPES)}")
        if self.compressor not in COMPRESSORS:
            raise ValueError(f"compressor must be one of {COMPRESSORS}")
        if self.batch_size < 1 or self.probe_images < 1 or self.writers < 1:
            raise ValueError("batch_size, probe_images and writers must be >= 1")

    @classmethod
    def from_config(cls, cfg: dict) -> ExtractSettings:
        """The settings found in a config section (other keys ignored)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in cfg.items() if k in names})

    def torch_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)


def bytes_per_image(table: pd.DataFrame, store_dtype: str = "float32") -> int:
    """Bytes one image adds to the store (stored layers only, uncompressed)."""
    itemsize = np.dtype(store_dtype).itemsize
    return int(table.loc[table["stored"], "features"].sum()) * itemsize


def preflight(
    table: pd.DataFrame, n_images: int, settings: ExtractSettings, dest: str | os.PathLike
) -> dict:
    """Estimate store size and staging memory; raise PreflightError over the limits.

    Returns the estimates and the batch size to use (shrunk to fit ``max_memory_gb``).
    """
    per_image = bytes_per_image(table, settings.store_dtype)
    store = per_image * n_images
    gb = 1024**3
    biggest = (
        table[table["stored"]].nlargest(3, "features")[["layer", "features"]].to_dict("records")
    )
    if store > settings.max_store_gb * gb:
        raise PreflightError(
            f"store would be {store / gb:.2f} GiB ({n_images} images x {per_image / 2**20:.1f} "
            f"MiB), over max_store_gb={settings.max_store_gb}; largest layers {biggest}. Choose "
            "fewer layers (zoo column `layers`), store_dtype float16, or raise max_store_gb."
        )
    free = free_disk(dest, store, "the activation store")["free_bytes"]
    staging_one = 2 * per_image
    if staging_one > settings.max_memory_gb * gb:
        raise PreflightError(
            f"one image needs {staging_one / gb:.2f} GiB of staging memory (two buffers of "
            f"{per_image / 2**20:.1f} MiB), over max_memory_gb={settings.max_memory_gb}"
        )
    batch = max(
        1, int(min(settings.batch_size, n_images, settings.max_memory_gb * gb // staging_one))
    )
    batch = math.ceil(n_images / math.ceil(n_images / batch))  # even batches: least chunk padding
    return {
        "bytes_per_image": per_image,
        "store_bytes": store,
        "free_disk_bytes": free,
        "batch_size": batch,
        "staging_bytes": 2 * per_image * batch,
    }


@dataclass
class Extraction:
    """What ``extract`` did: the layer table, preflight estimates and timings (seconds)."""

    table: pd.DataFrame
    estimates: dict
    timings: dict = field(default_factory=dict)
    device: str = "cpu"


def _image_batches(images, start: int, stop: int) -> np.ndarray:
    if hasattr(images, "isel"):
        return np.asarray(images.isel(image=slice(start, stop)).values, dtype=np.float32)
    return np.asarray(images[start:stop], dtype=np.float32)


def extract(
    model: nn.Module,
    preprocess: nn.Module,
    images,
    path: str | os.PathLike,
    layers: Sequence[str],
    settings: ExtractSettings | None = None,
    image_ids: Sequence[int] | None = None,
    attrs: dict | None = None,
    logger: logging.Logger | None = None,
) -> Extraction:
    """Run ``images`` (N, H, W) 0-255 through ``preprocess`` and ``model``; stream the chosen
    ``layers`` into a zarr store at ``path`` (see the module docstring). ``images`` is an
    array or an xarray DataArray with dim ``image`` (read batch by batch). ``attrs`` are added
    to the root attrs (e.g. ``cache_key``, ``provenance``)."""
    s = settings or ExtractSettings()
    logger = logger or log
    t_start = time.perf_counter()
    device = s.torch_device()
    n = int(images.shape[0])
    if image_ids is None:
        image_ids = images["image"].values if hasattr(images, "coords") else np.arange(n)
    image_ids = np.asarray(image_ids)

    model = model.eval().to(device)
    preprocess = preprocess.eval().to(device)
    made = make_out_of_place(model)
    if made:
        logger.info("switched %d in-place modules to out-of-place", len(made))

    def inputs(a, b):
        x = torch.from_numpy(_image_batches(images, a, b)).to(device)
        return preprocess(x)

    with Recorder(model, layers) as recorder:

        def forward(x, sink):
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=s.precision == "bf16"):
                recorder.run(lambda: model(x), sink)

        with torch.inference_mode():
            table = probe(model, forward, inputs(0, min(s.probe_images, n)))
        est = preflight(table, n, s, path)
        batch = est["batch_size"]
        logger.info(
            "%d layers (%d duplicates not stored), %.1f MiB per image, store %.2f GiB, batch %d, "
            "device %s, %s",
            len(table), int((~table["stored"]).sum()), est["bytes_per_image"] / 2**20,
            est["store_bytes"] / 2**30, batch, device, s.precision,
        )  # fmt: skip
        timings = Counter({"probe": time.perf_counter() - t_start})
        with atomic_path(path) as tmp, ThreadPoolExecutor(max_workers=s.writers) as pool:
            t0 = time.perf_counter()
            root, arrays = _create_store(tmp, table, image_ids, batch, s, pool)
            timings["create_store"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            stream = _Stream(table, arrays, batch, STORE_DTYPES[s.store_dtype], device, pool)
            timings["alloc_staging"] = time.perf_counter() - t0
            for bi, a in enumerate(range(0, n, batch)):
                b = min(a + batch, n)
                t1 = time.perf_counter()
                with torch.inference_mode():
                    stream.run(a, b, forward, inputs(a, b))
                logger.info(
                    "batch %d/%d: images %d-%d, %.3f s",
                    bi + 1, math.ceil(n / batch), a, b - 1, time.perf_counter() - t1,
                )  # fmt: skip
            stream.drain()
            timings.update(stream.timings)
            _check_duplicates(table, stream.fingerprints)
            root.attrs.update(
                {
                    "Conventions": CONVENTIONS,
                    "title": f"layer activations of {Path(path).name.removesuffix('.zarr')}",
                    "layers": _json_table(table),
                    **(attrs or {}),
                }
            )
            consolidate(tmp)
    timings["total"] = time.perf_counter() - t_start
    logger.info("wrote %s in %.2f s (%s)", path, timings["total"], dict(timings))
    return Extraction(table, est, dict(timings), str(device))


class _Stream:
    """Two host staging slots: hooks fill one while writer threads flush the other to zarr."""

    def __init__(self, table, arrays, batch, store_dtype, device, pool):
        self.cuda = device.type == "cuda"
        self.device, self.pool, self.dtype = device, pool, store_dtype
        self.files = {k: _ChunkFiles(arr) for k, arr in arrays.items()}
        self.shapes = {r.layer: _stored_shape(r.shape) for r in table[table["stored"]].itertuples()}
        dups = table[~table["stored"]]
        self.fingerprints = {k: [] for k in {*dups["layer"], *dups["duplicate_of"]}}
        self.slots = [
            {
                k: torch.empty((batch, *shape), dtype=store_dtype, pin_memory=self.cuda)
                for k, shape in self.shapes.items()
            }
            for _ in range(2)
        ]
        self.free = list(range(len(self.slots)))
        self.pending: list = []  # (slot index, futures) in submission order
        self.timings = Counter()

    def _finish_oldest(self):
        slot_idx, futures = self.pending.pop(0)
        for f in futures:
            f.result()
        self.free.append(slot_idx)

    def run(self, a: int, b: int, forward, x: torch.Tensor) -> None:
        t0 = time.perf_counter()
        while not self.free:
            self._finish_oldest()
        slot_idx = self.free.pop(0)
        slot = self.slots[slot_idx]
        self.timings["wait_writer"] += time.perf_counter() - t0
        m = b - a

        def sink(key, name, call, module, t):
            if key in self.shapes:
                src = t.detach().reshape(m, *self.shapes[key])
                if src.dtype != self.dtype:
                    src = src.to(self.dtype)
                slot[key][:m].copy_(src, non_blocking=self.cuda)  # stream-ordered snapshot
            if key in self.fingerprints:
                self.fingerprints[key].append(_fingerprint(t))

        t1 = time.perf_counter()
        forward(x, sink)
        if self.cuda:
            torch.cuda.current_stream(self.device).synchronize()
        self.timings["forward"] += time.perf_counter() - t1
        futures = [
            self.pool.submit(job)
            for k in self.shapes
            for job in self.files[k].tasks(a, slot[k][:m].numpy())
        ]
        self.pending.append((slot_idx, futures))

    def drain(self) -> None:
        t0 = time.perf_counter()
        while self.pending:
            self._finish_oldest()
        self.timings["drain_writer"] += time.perf_counter() - t0


def _check_duplicates(table: pd.DataFrame, fingerprints: dict) -> None:
    for row in table[~table["stored"]].itertuples():
        a = torch.stack([f.cpu() for f in fingerprints[row.layer]])
        b = torch.stack([f.cpu() for f in fingerprints[row.duplicate_of]])
        if not torch.equal(a, b):
            raise ExtractionError(
                f"layer {row.layer} matched {row.duplicate_of} on the probe images but not on "
                "all images; rerun with a larger probe_images"
            )


def extract_model(
    spec,
    stimuli: str | os.PathLike,
    out: str | os.PathLike,
    settings: ExtractSettings | None = None,
    weights_dir: str | os.PathLike = "resources/weights",
    layer_types: Sequence[str] = ("Conv2d", "Linear"),
    seed: int = 0,
    logger: logging.Logger | None = None,
    model: nn.Module | None = None,
) -> Extraction:
    """Build a zoo model (``zoo.ModelSpec``), extract its layers for the stimulus store.
    ``model``: a network already built, in place of the row's builder (the row still gives
    its name, preprocessing and layers)."""
    from ..io import open_zarr, provenance, sha256_file
    from . import zoo
    from .preprocess import make_preprocess

    s = settings or ExtractSettings()
    logger = logger or log
    if model is None:
        model, wsha = zoo.load_model(spec, weights_dir, seed=seed)
    else:
        wsha = None
    layers = select_layers(model, *zoo.parse_layers(spec.layers, layer_types))
    images = open_zarr(stimuli, chunks=None)["images"]
    extra = {
        "random_seed": seed if spec.weights_kind == "random" else None,
        "precision": s.precision,
        "store_dtype": s.store_dtype,
        "stimuli_shape": list(images.shape),
    }
    key = zoo.cache_key(spec, model, wsha, extra)
    key_sha = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
    stim_zarr = Path(stimuli) / "zarr.json"
    inputs = {"stimuli/zarr.json": sha256_file(stim_zarr) if stim_zarr.exists() else None}
    prov = provenance(config={"spec": spec.to_dict(), "settings": asdict(s)}, inputs=inputs)
    logger.info(
        "model %s: %s, %s weights, %d hooked modules",
        spec.name,
        spec.builder,
        spec.weights,
        len(layers),
    )
    return extract(
        model,
        make_preprocess(spec),
        images,
        out,
        layers,
        s,
        attrs={"cache_key": key, "cache_key_sha256": key_sha, "provenance": prov},
        logger=logger,
    )
