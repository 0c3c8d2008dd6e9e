"""The stored format of a digit domain: one xarray Dataset per domain, written as a zarr store.

- ``images`` (sample, channel=3, y=32, x=32) uint8, RGB (grey digits are copied to 3 channels);
- ``labels`` (sample) int64, the digit 0-9;
- ``split`` (sample) uint8, 0 = train, 1 = test (offline domains are all train);
- attrs ``provenance`` (JSON: code version, builder settings, sha256 of every source file),
  ``domain`` and ``description``.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

IMAGE_SIZE = 32
NUM_CLASSES = 10
SPLIT_TRAIN, SPLIT_TEST = 0, 1


class DomainFileError(ValueError):
    """A domain store or a downloaded source file is missing, corrupt or malformed."""


def _bilinear_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) weights of 1-D linear interpolation, half-pixel centres (torch's
    ``align_corners=False``); applied along y and x it is a bilinear resize."""
    src = np.clip((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0, n_in - 1)
    i0 = np.floor(src).astype(int)
    i1 = np.minimum(i0 + 1, n_in - 1)
    w1 = src - i0
    m = np.zeros((n_out, n_in))
    np.add.at(m, (np.arange(n_out), i0), 1 - w1)
    np.add.at(m, (np.arange(n_out), i1), w1)
    return m.astype(np.float32)


def to_rgb32(images: np.ndarray) -> np.ndarray:
    """(N, H, W) grey or (N, H, W, 3) RGB images, range 0-255 -> (N, 3, 32, 32) uint8.

    Bilinear resize (numpy, no torch import) when not already 32 x 32; grey is copied to RGB.
    """
    x = np.asarray(images)
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4 and x.shape[-1] in (1, 3):
        x = np.moveaxis(x, -1, 1)
    else:
        raise ValueError(f"expected (N, H, W) or (N, H, W, 3) images, got shape {x.shape}")
    n, c, h, w = x.shape
    out = np.empty((n, 3, IMAGE_SIZE, IMAGE_SIZE), np.uint8)
    ry, rx = _bilinear_matrix(h, IMAGE_SIZE), _bilinear_matrix(w, IMAGE_SIZE)
    for i in range(0, n, 4096):
        chunk = x[i : i + 4096].astype(np.float32)
        if (h, w) != (IMAGE_SIZE, IMAGE_SIZE):
            chunk = np.einsum("yh,nchw,xw->ncyx", ry, chunk, rx, optimize=True)
        out[i : i + 4096] = np.clip(np.rint(chunk), 0, 255).astype(np.uint8)
    return out


def make_dataset(
    images: np.ndarray,
    labels: np.ndarray,
    split: np.ndarray | None = None,
    *,
    domain: str,
    description: str,
    provenance: str,
):
    """Wrap (N, 3, 32, 32) uint8 images and labels in the stored xarray format."""
    import xarray as xr

    images = np.asarray(images)
    labels = np.asarray(labels, dtype=np.int64)
    n = len(labels)
    split = np.zeros(n, np.uint8) if split is None else np.asarray(split, np.uint8)
    ds = xr.Dataset(
        {
            "images": (("sample", "channel", "y", "x"), images),
            "labels": ("sample", labels),
            "split": ("sample", split),
        },
        coords={"sample": np.arange(n)},
        attrs={
            "domain": domain,
            "description": description,
            "provenance": provenance,
            "channels": "RGB",
        },
    )
    ds["split"].attrs.update(flag_values=[SPLIT_TRAIN, SPLIT_TEST], flag_meanings="train test")
    validate_domain(ds, domain)
    return ds


def validate_domain(ds, where: str | os.PathLike = "") -> None:
    """Check the stored format; raise DomainFileError naming ``where`` on any violation."""

    def bad(msg: str) -> DomainFileError:
        return DomainFileError(f"{where}: {msg}")

    for var in ("images", "labels", "split"):
        if var not in ds:
            raise bad(f"missing variable {var!r} (not a digit-domain store)")
    im = ds["images"]
    if im.dims != ("sample", "channel", "y", "x"):
        raise bad(f"images has dims {im.dims}, expected (sample, channel, y, x)")
    if im.shape[1:] != (3, IMAGE_SIZE, IMAGE_SIZE) or im.dtype != np.uint8:
        raise bad(f"images is {im.dtype} {im.shape}, expected uint8 (N, 3, 32, 32)")
    if ds["labels"].dims != ("sample",) or ds["labels"].shape[0] != im.shape[0]:
        raise bad("labels must be (sample,) with one label per image")
    if im.shape[0] == 0:
        raise bad("no samples")
    lab = np.asarray(ds["labels"].values)
    if lab.min() < 0 or lab.max() >= NUM_CLASSES:
        raise bad(f"labels outside 0..{NUM_CLASSES - 1}: [{lab.min()}, {lab.max()}]")
    if "provenance" not in ds.attrs:
        raise bad("attrs carry no provenance")


def write_domain(ds, path: str | os.PathLike) -> Path:
    """Write a domain store atomically (temporary store, then rename)."""
    from ...io import write_zarr_atomic

    validate_domain(ds, path)
    chunk = (min(4096, ds.sizes["sample"]), 3, IMAGE_SIZE, IMAGE_SIZE)
    return write_zarr_atomic(ds, path, encoding={"images": {"chunks": chunk}})


def load_domain(path: str | os.PathLike):
    """Read a domain store fully into memory; a missing or corrupt store names its path."""
    from ...io import open_zarr

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: domain store does not exist (build it with the dg rules)")
    try:
        ds = open_zarr(path, chunks=None).load()
    except Exception as err:
        raise DomainFileError(
            f"{path}: cannot read domain store ({type(err).__name__}: {err}); delete it and "
            "rebuild it"
        ) from err
    validate_domain(ds, path)
    return ds


def domain_arrays(ds, role: str) -> tuple[np.ndarray, np.ndarray]:
    """(images, labels) of a loaded domain for ``role``: "source" (its train samples) or
    "target" (its test samples when it has any, else all samples)."""
    split = np.asarray(ds["split"].values)
    if role == "source":
        keep = split == SPLIT_TRAIN
    elif role == "target":
        keep = split == SPLIT_TEST if (split == SPLIT_TEST).any() else np.ones_like(split, bool)
    else:
        raise ValueError(f"role must be 'source' or 'target', got {role!r}")
    return np.asarray(ds["images"].values[keep]), np.asarray(ds["labels"].values[keep])


def domain_checksum(ds) -> str:
    """sha256 of a domain's stored images and labels (used in job provenance and resume keys)."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(ds["images"].values).tobytes())
    h.update(np.ascontiguousarray(ds["labels"].values).astype("<i8").tobytes())
    h.update(np.ascontiguousarray(ds["split"].values).tobytes())
    return h.hexdigest()


def provenance(domain: str, settings: dict, inputs: dict, source: str) -> str:
    """The provenance attribute of a built domain (code version, settings, input checksums)."""
    from ...io import provenance as _provenance

    return _provenance(config=settings, inputs=inputs, domain=domain, source=source)


def per_class(
    labels: np.ndarray, n_per_class: int | None, rng: np.random.Generator, name: str
) -> np.ndarray:
    """Indices of a class-balanced random subset (sorted), or all when n_per_class is None."""
    if n_per_class is None:
        return np.arange(len(labels))
    keep = []
    for c in range(NUM_CLASSES):
        idx = np.flatnonzero(labels == c)
        if len(idx) < n_per_class:
            raise ValueError(
                f"{name}: class {c} has {len(idx)} samples < n_per_class={n_per_class}"
            )
        keep.append(rng.choice(idx, n_per_class, replace=False))
    return np.sort(np.concatenate(keep))


def describe(ds) -> dict:
    """Counts per split and class, for logs and tests."""
    lab = np.asarray(ds["labels"].values)
    split = np.asarray(ds["split"].values)
    return {
        "n": int(len(lab)),
        "n_test": int((split == SPLIT_TEST).sum()),
        "per_class": np.bincount(lab, minlength=NUM_CLASSES).tolist(),
        "provenance": json.loads(ds.attrs["provenance"]),
    }
