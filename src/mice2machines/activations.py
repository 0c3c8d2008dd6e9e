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

import functools
import hashlib
import json
import logging
import math
import os
import shutil
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from .io import atomic_path

PRECISIONS = ("fp32", "bf16")
STORE_DTYPES = {"float32": torch.float32, "float16": torch.float16}
COMPRESSORS = ("none", "lz4", "zstd")
TABLE_COLUMNS = (
    "layer", "module", "call", "type", "order", "depth", "dims", "shape", "features",
    "parameters", "dtype", "duplicate_of", "stored",
)  # fmt: skip

log = logging.getLogger(__name__)


class PreflightError(RuntimeError):
    """The extraction would exceed a configured memory or disk limit."""


class ExtractionError(RuntimeError):
    """The extraction produced something inconsistent (e.g. a failed duplicate check)."""


@dataclass
class ExtractSettings:
    """Knobs of one extraction (config section ``models``)."""

    batch_size: int = 16  # images per forward; lowered automatically to fit max_memory_gb
    precision: str = "fp32"  # fp32 | bf16 (autocast on the model; preprocessing stays fp32)
    store_dtype: str = "float32"  # float32 | float16
    compressor: str = "none"  # none | lz4 | zstd (blosc, byte shuffle)
    chunk_mb: float = 32.0  # target chunk size
    max_store_gb: float = 50.0  # fail if the (uncompressed) store would be larger
    max_memory_gb: float = 8.0  # host staging memory limit (two batches of stored layers)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    writers: int = 8  # writer threads (chunk files are written in parallel)
    probe_images: int = 2  # images in the probe forward (dedup by hash)

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


# ---------------------------------------------------------------- choosing and hooking layers


def make_out_of_place(model: nn.Module) -> list[str]:
    """Switch every module with ``inplace=True`` to out-of-place; return their names."""
    changed = []
    for name, m in model.named_modules():
        if isinstance(getattr(m, "inplace", None), bool) and m.inplace:
            m.inplace = False
            changed.append(name)
    return changed


def select_layers(model: nn.Module, mode: str, items: Sequence[str] = ()) -> list[str]:
    """Module names to hook, in registration order.

    ``all``: every leaf module. ``types``: every module that is an instance of a class of
    one of these names (checked along the class's MRO, so ``Conv2d`` also takes subclasses;
    custom block classes such as ``EncoderBlock`` work too). ``names``: exactly these.
    """
    modules = [(n, m) for n, m in model.named_modules() if n]
    if mode == "all":
        chosen = [n for n, m in modules if not any(True for _ in m.children())]
    elif mode == "types":
        wanted = set(items)
        chosen = [n for n, m in modules if wanted & {c.__name__ for c in type(m).__mro__}]
        seen = {c.__name__ for _, m in modules for c in type(m).__mro__}
        if not chosen:
            raise ValueError(f"no module of types {sorted(wanted)}; the model has {sorted(seen)}")
    elif mode == "names":
        have = dict(modules)
        missing = [n for n in items if n not in have]
        if missing:
            raise ValueError(f"no modules named {missing} in the model")
        chosen = list(items)
    else:
        raise ValueError(f"unknown layer selection mode {mode!r}")
    return chosen


def _first_tensor(out):
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)):
        for o in out:
            if isinstance(o, torch.Tensor):
                return o
    return None


def layer_key(name: str, call: int) -> str:
    """Store name of the ``call``-th call of module ``name`` (``name``, ``name@1``, ...)."""
    return name if call == 0 else f"{name}@{call}"


class Recorder:
    """Forward hooks on named modules; each call is passed to ``sink(key, name, call, module, t)``."""

    def __init__(self, model: nn.Module, names: Sequence[str]):
        self.model = model
        self.names = list(names)
        self.calls: Counter = Counter()
        self.sink: Callable | None = None
        self._handles = []

    def __enter__(self):
        modules = dict(self.model.named_modules())
        for name in self.names:
            self._handles.append(modules[name].register_forward_hook(self._hook(name)))
        return self

    def __exit__(self, *exc):
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def _hook(self, name):
        def hook(module, inputs, output):
            call = self.calls[name]
            self.calls[name] += 1
            t = _first_tensor(output)
            if t is not None and self.sink is not None:
                self.sink(layer_key(name, call), name, call, module, t)

        return hook

    def run(self, fn: Callable, sink: Callable):
        """Run ``fn()`` (a forward pass) with ``sink`` receiving every hooked call."""
        self.calls.clear()
        self.sink = sink
        try:
            return fn()
        finally:
            self.sink = None


# ---------------------------------------------------------------- layer table


def _dims(shape: Sequence[int]) -> str:
    return "image,channel,y,x" if len(shape) == 3 else "image,unit"


def _stored_shape(shape: Sequence[int]) -> tuple[int, ...]:
    return tuple(shape) if len(shape) == 3 else (int(np.prod(shape, dtype=np.int64)),)


def _fingerprint(t: torch.Tensor) -> torch.Tensor:
    """Exact, layout-independent fingerprint of a tensor's values (integer sums of its bits)."""
    flat = t.detach().contiguous().reshape(-1)
    bits = flat.view(
        {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[flat.element_size()]
    )
    bits = bits.to(torch.int64)
    weight = torch.arange(bits.numel(), device=bits.device, dtype=torch.int64) % 65521 + 1
    return torch.stack([bits.sum(), (bits * weight).sum()])


def probe(model: nn.Module, forward: Callable, x: torch.Tensor) -> pd.DataFrame:
    """One ``forward(x, sink)``: the layer table, duplicates marked by a hash of their outputs."""
    rows, hashes = [], {}
    params = {n: sum(p.numel() for p in m.parameters()) for n, m in model.named_modules()}

    def sink(key, name, call, module, t):
        host = t.detach().to("cpu", copy=True).contiguous()
        digest = hashlib.sha1(host.reshape(-1).view(torch.uint8).numpy().tobytes()).hexdigest()
        hkey = (tuple(host.shape), str(host.dtype), digest)
        shape = [int(s) for s in host.shape[1:]]
        rows.append(
            {
                "layer": key,
                "module": name,
                "call": call,
                "type": type(module).__name__,
                "dims": _dims(shape),
                "shape": shape,
                "features": int(np.prod(shape, dtype=np.int64)),
                "parameters": int(params[name]),
                "dtype": str(host.dtype).replace("torch.", ""),
                "duplicate_of": hashes.get(hkey, ""),
            }
        )
        hashes.setdefault(hkey, key)

    forward(x, sink)
    if not rows:
        raise ExtractionError("none of the chosen layers produced a tensor output")
    table = pd.DataFrame(rows)
    table.insert(4, "order", np.arange(len(table)))
    table.insert(5, "depth", table["order"] / max(len(table) - 1, 1))
    table["stored"] = table["duplicate_of"] == ""
    return table[list(TABLE_COLUMNS)]


# ---------------------------------------------------------------- preflight


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
    parent = Path(dest).resolve().parent
    parent.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(parent).free
    if store > free:
        raise PreflightError(
            f"store would be {store / gb:.2f} GiB but only {free / gb:.2f} GiB are free in {parent}"
        )
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


# ---------------------------------------------------------------- the store


def _compressors(name: str, itemsize: int):
    if name == "none":
        return None
    from zarr.codecs import BloscCodec

    return [
        BloscCodec(
            cname=name, clevel=1 if name == "lz4" else 3, shuffle="shuffle", typesize=itemsize
        )
    ]


def _chunks(stored_shape: tuple[int, ...], batch: int, itemsize: int, chunk_mb: float):
    """Chunks: ``batch`` images (aligned with writes) x about chunk_mb worth of channels/units,
    split evenly so the edge chunk (stored full size) wastes little."""
    inner = int(np.prod(stored_shape[1:], dtype=np.int64)) if len(stored_shape) > 1 else 1
    per_lead = batch * inner * itemsize
    most = max(1, min(stored_shape[0], int(chunk_mb * 2**20 // max(per_lead, 1))))
    lead = math.ceil(stored_shape[0] / math.ceil(stored_shape[0] / most))
    return (batch, lead, *stored_shape[1:])


class _ChunkFiles:
    """Writes batch slabs of an uncompressed zarr v3 array straight into its chunk files.

    The array's only codec is ``bytes`` (little endian), so a chunk file is the chunk's
    C-order bytes (the zarr v3 spec); edge chunks are stored full size, padded with the fill
    value. Writing them from our threads avoids zarr's single event-loop thread, which caps
    ``arr[a:b] = x`` near 1 GB/s; a slab that is one whole chunk is written without a copy.
    Arrays with a compressor go through ``arr.__setitem__``.
    """

    def __init__(self, arr):
        self.arr = arr
        meta = arr.metadata
        self.direct = (
            sys.byteorder == "little"
            and len(meta.codecs) == 1
            and type(meta.codecs[0]).__name__ == "BytesCodec"
            and isinstance(getattr(arr.store_path.store, "root", None), Path)
        )
        self.chunks = tuple(meta.chunk_grid.chunk_shape)
        self.base = Path(arr.store_path.store.root) / arr.store_path.path if self.direct else None
        self.fill = meta.fill_value

    def tasks(self, a: int, slab: np.ndarray) -> list[Callable[[], None]]:
        """Zero-argument jobs writing ``slab`` (images a .. a + len(slab)) to the store."""
        if not self.direct:
            return [functools.partial(self.arr.__setitem__, slice(a, a + len(slab)), slab)]
        bi, lead = a // self.chunks[0], self.chunks[1]
        tail = (0,) * (len(self.chunks) - 2)
        return [
            functools.partial(
                self._write,
                self.arr.metadata.encode_chunk_key((bi, j, *tail)),
                slab[:, c0 : c0 + lead],
            )
            for j, c0 in enumerate(range(0, self.arr.shape[1], lead))
        ]

    def _write(self, key: str, part: np.ndarray) -> None:
        if part.shape != self.chunks:
            full = np.full(self.chunks, self.fill, dtype=part.dtype)
            full[tuple(slice(0, n) for n in part.shape)] = part
            part = full
        path = self.base / key
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:
            f.write(np.ascontiguousarray(part).data)


def _create_store(
    path: Path, table: pd.DataFrame, image_ids: np.ndarray, batch: int, s: ExtractSettings, pool
):
    """Empty store: one group per stored layer with ``image`` and a NaN-filled ``activations``."""
    import zarr

    root = zarr.open_group(str(path), mode="w", zarr_format=3)
    dtype = np.dtype(s.store_dtype)

    def create(row):
        shape = _stored_shape(row.shape)
        g = root.create_group(row.layer)
        img = g.create_array(
            "image", shape=image_ids.shape, dtype=image_ids.dtype, dimension_names=["image"],
            compressors=None,
        )  # fmt: skip
        img[:] = image_ids
        return row.layer, g.create_array(
            "activations",
            shape=(len(image_ids), *shape),
            chunks=_chunks(shape, batch, dtype.itemsize, s.chunk_mb),
            dtype=dtype,
            fill_value=np.nan,
            compressors=_compressors(s.compressor, dtype.itemsize),
            dimension_names=row.dims.split(","),
            attributes={"layer": row.layer, "module": row.module, "type": row.type},
        )

    return root, dict(pool.map(create, table[table["stored"]].itertuples()))


def _json_table(table: pd.DataFrame) -> list[dict]:
    return json.loads(table.to_json(orient="records"))


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
            root.attrs.update({"layers": _json_table(table), **(attrs or {})})
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


# ---------------------------------------------------------------- readers


def _root_attrs(path: str | os.PathLike) -> dict:
    import zarr

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: activation store does not exist")
    return dict(zarr.open_group(str(path), mode="r").attrs)


def list_layers(path: str | os.PathLike) -> pd.DataFrame:
    """The layer table of an activation store (one row per hooked layer call)."""
    table = pd.DataFrame(_root_attrs(path)["layers"])
    table["shape"] = table["shape"].map(tuple)
    return table


def read_cache_key(path: str | os.PathLike) -> dict:
    """The cache key an activation store was made with."""
    return _root_attrs(path)["cache_key"]


def open_layer(path: str | os.PathLike, layer: str):
    """One layer's activations as a lazy (dask-backed) xarray DataArray.

    Dims (image, channel, y, x) or (image, unit); a de-duplicated layer returns the data of the
    layer it duplicates, named after the requested layer.
    """
    import xarray as xr

    table = list_layers(path).set_index("layer")
    if layer not in table.index:
        raise KeyError(f"{path} has no layer {layer!r}; layers: {list(table.index)}")
    group = table.loc[layer, "duplicate_of"] or layer
    da = xr.open_zarr(str(path), group=group, consolidated=False)["activations"]
    da.attrs.update({"layer": layer, "duplicate_of": table.loc[layer, "duplicate_of"]})
    return da.rename(layer)


# ---------------------------------------------------------------- one zoo model, end to end


def extract_model(
    spec,
    stimuli: str | os.PathLike,
    out: str | os.PathLike,
    settings: ExtractSettings | None = None,
    weights_dir: str | os.PathLike = "resources/weights",
    layer_types: Sequence[str] = ("Conv2d", "Linear"),
    seed: int = 0,
    logger: logging.Logger | None = None,
) -> Extraction:
    """Build a zoo model (``zoo.ModelSpec``), extract its layers for the stimulus store."""
    from . import zoo
    from .io import open_zarr, provenance, sha256_file
    from .weights import verify

    s = settings or ExtractSettings()
    logger = logger or log
    model = zoo.build_model(spec, weights_dir, seed=seed)
    wfile = zoo.weights_file(spec, weights_dir)
    wsha = verify(wfile, model=spec.name) if wfile is not None else None
    layers = select_layers(model, *zoo.parse_layers(spec.layers, layer_types))
    images = open_zarr(stimuli)["images"]
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
        zoo.make_preprocess(spec),
        images,
        out,
        layers,
        s,
        attrs={"cache_key": key, "cache_key_sha256": key_sha, "provenance": prov},
        logger=logger,
    )
