"""The activation store: one zarr group per stored layer; its writer and its readers.

Layout: root attrs ``layers`` (the layer table), ``cache_key``, ``cache_key_sha256``,
``provenance``; one group per stored layer holding the xarray variable ``activations`` with
dims (image, channel, y, x) for 4-D outputs, else (image, unit), and the coordinate ``image``.
"""

from __future__ import annotations

import functools
import json
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ..io import is_consolidated

if TYPE_CHECKING:
    from .extract import ExtractSettings

COMPRESSORS = ("none", "lz4", "zstd")


def _stored_shape(shape) -> tuple[int, ...]:
    """A layer's stored shape: (C, H, W) maps as they are, anything else flattened."""
    return tuple(shape) if len(shape) == 3 else (int(np.prod(shape, dtype=np.int64)),)


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
            compressors=None, attributes={"long_name": "stimulus image id", "units": "1"},
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
            attributes={
                "layer": row.layer,
                "module": row.module,
                "type": row.type,
                "long_name": f"activation of layer {row.layer}",
                "units": "1",
            },
        )

    return root, dict(pool.map(create, table[table["stored"]].itertuples()))


def _json_table(table: pd.DataFrame) -> list[dict]:
    return json.loads(table.to_json(orient="records"))


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
    da = xr.open_zarr(str(path), group=group, consolidated=is_consolidated(path))["activations"]
    da.attrs.update({"layer": layer, "duplicate_of": table.loc[layer, "duplicate_of"]})
    return da.rename(layer)
