"""Natural-image-like stimuli: bundled photos and 1/f noise, grey 0-255."""

from __future__ import annotations

import numpy as np

from .experiments import N_IMAGES

# skimage's bundled photographs used as natural-image crops.
PHOTOS = (
    "astronaut",
    "camera",
    "coffee",
    "chelsea",
    "rocket",
    "coins",
    "moon",
    "grass",
    "gravel",
    "brick",
    "cat",
    "clock",
    "hubble_deep_field",
)


def _one_over_f(rng: np.random.Generator, h: int, w: int, alpha: float = 1.0) -> np.ndarray:
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    f = np.sqrt(fx**2 + fy**2)
    f[0, 0] = 1.0
    spectrum = (rng.normal(size=f.shape) + 1j * rng.normal(size=f.shape)) / f**alpha
    spectrum[0, 0] = 0
    return np.fft.irfft2(spectrum, s=(h, w))


def _photos() -> list[np.ndarray]:
    import skimage.color
    import skimage.data

    out = []
    for name in PHOTOS:
        try:
            img = getattr(skimage.data, name)()
        except Exception:  # a photo that needs a download is skipped
            continue
        if img.ndim == 3:
            img = skimage.color.rgb2gray(img[..., :3])
        out.append(np.asarray(img, dtype=np.float64))
    return out


def make_stimuli(height: int, width: int, seed: int = 0, n_images: int = N_IMAGES) -> np.ndarray:
    """Natural-like grayscale stimuli (n_images, height, width), float32 in 0..255.

    Two of every three images are random crops of skimage's photographs, the rest 1/f noise,
    each contrast-normalised to the range of the Allen templates.
    """
    from skimage.transform import resize

    rng = np.random.default_rng(seed)
    photos = _photos()
    out = np.empty((n_images, height, width), dtype=np.float32)
    aspect = width / height
    for i in range(n_images):
        if photos and i % 3 != 2:
            src = photos[rng.integers(len(photos))]
            ch = int(rng.uniform(0.35, 0.9) * min(src.shape[0], src.shape[1] / aspect))
            cw = int(ch * aspect)
            y0 = rng.integers(0, src.shape[0] - ch + 1)
            x0 = rng.integers(0, src.shape[1] - cw + 1)
            img = resize(src[y0 : y0 + ch, x0 : x0 + cw], (height, width), anti_aliasing=True)
            if rng.random() < 0.5:
                img = img[:, ::-1]
        else:
            img = _one_over_f(rng, height, width, alpha=rng.uniform(0.9, 1.3))
        lo, hi = np.percentile(img, [0.5, 99.5])
        img = np.clip((img - lo) / max(hi - lo, 1e-9), 0, 1)
        out[i] = (img * 255.0).astype(np.float32)
    return out
