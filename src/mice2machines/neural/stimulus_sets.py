"""Stimulus sets other than the Allen natural scenes: a folder of images, an image array
(.npy) or an xarray store (zarr or netCDF) with an `images` or `stimuli` variable.

Every set becomes the same stimulus store as the Allen template (`population.stimuli_dataset`:
`images (image, y, x)` float32 on a 0-255 gray scale), which feeds both the model side
(extraction) and the neural side (the comparison's receptive-field maps). Colour images are
converted to gray with the ITU-R 601 luma weights, since the whole pipeline is grayscale.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
LUMA = (0.299, 0.587, 0.114)
STIMULUS_VARIABLES = ("images", "stimuli")


class StimulusError(ValueError):
    """A stimulus set that cannot be read: names the file, the key and the problem."""


def image_files(folder: str | Path) -> list[Path]:
    """The image files of a folder, sorted by name."""
    folder = Path(folder)
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise StimulusError(
            f"{folder}: no image files ({', '.join(IMAGE_SUFFIXES)}) in the stimulus folder"
        )
    return files


def file_ids(files: Sequence[Path], like=None) -> np.ndarray:
    """Image ids of files: their stems, as integers when ``like`` (the responses' image ids)
    is integer, e.g. ``007.png`` -> 7."""
    stems = [p.stem for p in files]
    if like is not None and np.asarray(like).dtype.kind not in "iu":
        return np.array(stems, dtype=object)
    try:
        return np.array([int(s) for s in stems], dtype=np.int64)
    except ValueError:
        if like is None:
            return np.array(stems, dtype=object)
        bad = next(s for s in stems if not s.lstrip("-").isdigit())
        raise StimulusError(
            f"{files[0].parent}: file {bad!r} is not an integer image id, but the responses' "
            "`image` coordinate is integer (name the files by image id, e.g. 007.png)"
        ) from None


def to_gray(images: np.ndarray, where: str) -> np.ndarray:
    """(image, y, x) or (image, y, x, channel) -> (image, y, x) float32 gray levels."""
    images = np.asarray(images)
    if images.dtype.kind not in "biuf":
        raise StimulusError(f"{where}: images are {images.dtype}, not numbers")
    if images.ndim == 4:
        c = images.shape[-1]
        if c == 1:
            images = images[..., 0]
        elif c in (3, 4):
            images = np.tensordot(images[..., :3].astype(np.float64), LUMA, axes=([-1], [0]))
        else:
            raise StimulusError(f"{where}: {c} channels (expected 1, 3 or 4)")
    if images.ndim != 3:
        raise StimulusError(
            f"{where}: images have shape {images.shape}; expected (image, y, x[, channel])"
        )
    return images.astype(np.float32)


def read_image_folder(folder: str | Path, like=None) -> tuple[np.ndarray, np.ndarray]:
    """(gray images (image, y, x) float32 0-255, image ids) of a folder, sorted by name."""
    from PIL import Image

    files = image_files(folder)
    ids = file_ids(files, like)
    arrays = []
    for f in files:
        with Image.open(f) as im:
            if im.mode in ("I;16", "I;16B", "I"):
                arr = np.asarray(im, dtype=np.float64) / 257.0  # 16-bit gray to 0-255
            else:
                arr = np.asarray(im.convert("L" if im.mode in ("1", "L", "LA") else "RGB"))
        arrays.append(arr)
    shapes = {a.shape[:2] for a in arrays}
    if len(shapes) > 1:
        raise StimulusError(f"{folder}: images differ in size {sorted(shapes)}; resize them")
    gray = [
        to_gray(a[None, ..., None] if a.ndim == 2 else a[None], str(f))
        for a, f in zip(arrays, files, strict=True)
    ]
    return np.concatenate(gray), ids


def open_stimuli(path: str | Path, key: str = "table.stimuli", like=None):
    """A stimulus set as an xarray DataArray ``(image, y, x)`` gray 0-255 with image ids.

    ``path``: a folder of images, a ``.npy`` array (ids 0..n-1 in order), or a zarr/netCDF
    store with ``images`` or ``stimuli`` (image, y, x[, channel]) and an ``image`` coordinate.
    ``like``: the responses' image ids (for the dtype of ids taken from file names).
    """
    import xarray as xr

    path = Path(path)
    if not path.exists():
        raise StimulusError(f"{path}: stimulus set not found ({key})")
    if path.is_dir() and not _is_zarr(path):
        images, ids = read_image_folder(path, like)
    elif path.suffix == ".npy":
        images = to_gray(np.load(path), f"{path} ({key})")
        ids = np.arange(len(images), dtype=np.int64)
    else:
        ds = open_store(path, key)
        return stimulus_array(ds, path, key)
    return xr.DataArray(images, dims=("image", "y", "x"), coords={"image": ids})


def stimulus_array(ds, path, key: str):
    """The gray (image, y, x) DataArray of a store's ``images`` or ``stimuli`` variable."""
    import xarray as xr

    name = next((v for v in STIMULUS_VARIABLES if v in ds), None)
    if name is None:
        raise StimulusError(f"{path}: no `images` or `stimuli` variable ({key})")
    da = ds[name]
    dims = ("image", "y", "x", "channel")[: da.ndim]
    if set(da.dims) != set(dims):
        raise StimulusError(
            f"{path}: `{name}` has dims {da.dims}; expected (image, y, x[, channel]) ({key})"
        )
    da = da.transpose(*dims)
    gray = to_gray(da.values, f"{path}: `{name}`")
    ids = da["image"].values if "image" in da.coords else np.arange(len(gray), dtype=np.int64)
    return xr.DataArray(gray, dims=("image", "y", "x"), coords={"image": ids})


def _is_zarr(path: Path) -> bool:
    return (path / "zarr.json").exists() or (path / ".zgroup").exists()


def open_store(path: str | Path, key: str):
    """An xarray store, zarr (a directory) or netCDF (a file), opened lazily (labels the
    package's writer coded as CF flags come back as strings)."""
    import xarray as xr

    from ..io import decode_labels

    path = Path(path)
    try:
        if path.is_dir():
            with warnings.catch_warnings():  # a store without consolidated metadata is fine
                warnings.filterwarnings("ignore", message="Failed to open Zarr store")
                return decode_labels(xr.open_zarr(path, consolidated=None))
        return decode_labels(xr.open_dataset(path, chunks={}))
    except (OSError, ValueError, KeyError) as err:
        raise StimulusError(f"{path}: cannot open as zarr or netCDF ({key}): {err}") from err


def check_ids(stim_ids, image_ids, path, key: str) -> None:
    """Every image of the responses must have a stimulus, and ids must be unique."""
    stim = np.asarray(stim_ids)
    resp = np.asarray(image_ids)
    dup = _duplicates(stim)
    if dup:
        raise StimulusError(f"{path}: duplicate image ids {dup[:5]} ({key})")
    if (
        stim.dtype.kind in "iu"
        and resp.dtype.kind not in "iu"
        or (resp.dtype.kind in "iu" and stim.dtype.kind not in "iu")
    ):
        raise StimulusError(
            f"{path}: image ids are {stim.dtype} but the responses' `image` coordinate is "
            f"{resp.dtype} ({key})"
        )
    missing = np.setdiff1d(resp.astype(stim.dtype), stim)
    if len(missing):
        raise StimulusError(
            f"{path}: {len(missing)} image ids of the responses have no stimulus, e.g. "
            f"{missing[:5].tolist()} ({key}; stimulus ids: {_span(stim)})"
        )


def _duplicates(values: np.ndarray) -> list:
    uniq, counts = np.unique(
        values.astype(str) if values.dtype == object else values, return_counts=True
    )
    return uniq[counts > 1].tolist()


def _span(ids: np.ndarray) -> str:
    ids = list(ids.tolist())
    return f"{ids[:3]}...{ids[-1:]} ({len(ids)})" if len(ids) > 4 else str(ids)
