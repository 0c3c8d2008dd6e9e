"""Synthetic Visual Coding 2P sessions with planted receptive fields.

The generator writes NWB 1.x files in exactly the layout of the Allen Brain Observatory
(see `nwb.py` for the paths) so that the whole pipeline, and allensdk's own reader, can run
on them. Every neuron has a known receptive field (a Gabor for excitatory lines, a broader,
less selective difference of Gaussians for inhibitory ones) whose position and size depend on
area and Cre line; responses pass a static nonlinearity, Poisson spiking, a GCaMP-like
calcium kernel and noise. The planted parameters are written next to each file so later
stages can check that they recover the truth.

With a layer drive (config ``synthetic.drive.kind: layer``) each neuron is instead driven by one
unit of a known layer of a known zoo model (`model_layer_drive`, `layer_rates`), so the
comparison stage can check that this layer ranks first.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from .labels import AREAS, ei_class, normalise_cre_line

N_IMAGES = 118
FRAME_RATE_HZ = 30.0
FRAMES_PER_PRESENTATION = 7
PRESENTATION_PERIOD_FRAMES = 7.5  # 250 ms at 30 Hz: onsets 7 or 8 frames apart, as recorded
EXPERIMENT_ID_BASE = 900_000_000
CONTAINER_ID_BASE = 800_000_000
CELL_ID_BASE = 700_000_000

# Retinotopic centre (x, y as fractions of the image) and RF size (sigma, fraction of height).
AREA_RF = {
    "VISp": ((0.50, 0.50), 0.060),
    "VISl": ((0.35, 0.55), 0.075),
    "VISal": ((0.45, 0.40), 0.085),
    "VISpm": ((0.62, 0.58), 0.105),
    "VISam": ((0.58, 0.38), 0.115),
    "VISrl": ((0.40, 0.65), 0.090),
}
INHIBITORY_SIZE_FACTOR = 1.6

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


@dataclasses.dataclass(frozen=True)
class Experiment:
    """One synthetic session: ids and the population it records."""

    experiment_id: int
    container_id: int
    area: str
    cre_line: str
    imaging_depth: int
    n_cells: int
    seed: int


def experiment_table(cfg: dict) -> pd.DataFrame:
    """The manifest of synthetic experiments implied by the `synthetic` config section.

    Same columns as the Allen discovery manifest (see `allen.MANIFEST_COLUMNS`).
    """
    rows = []
    index = 0
    for area in cfg["areas"]:
        if area not in AREAS:
            raise ValueError(f"synthetic.areas: unknown area {area!r}; known: {AREAS}")
        for cre in cfg["cre_lines"]:
            cre = normalise_cre_line(cre)
            for rep in range(cfg.get("experiments_per_combination", 1)):
                depth = (175, 275, 375)[rep % 3]
                rows.append(
                    {
                        "experiment_id": EXPERIMENT_ID_BASE + index,
                        "container_id": CONTAINER_ID_BASE + index,
                        "area": area,
                        "cre_line": cre,
                        "ei_class": ei_class(cre),
                        "imaging_depth": depth,
                        "session_type": "three_session_B",
                        "n_cells": int(cfg["cells_per_experiment"]),
                    }
                )
                index += 1
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- stimuli


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


# --------------------------------------------------------------------------- receptive fields


def plant_cells(exp: Experiment, height: int, width: int) -> pd.DataFrame:
    """Receptive-field parameters for every cell of an experiment (one row per cell)."""
    rng = np.random.default_rng(exp.seed)
    (cx, cy), sigma_frac = AREA_RF[exp.area]
    inhibitory = ei_class(exp.cre_line) == "inhibitory"
    size = sigma_frac * (INHIBITORY_SIZE_FACTOR if inhibitory else 1.0)
    n = exp.n_cells
    ids = CELL_ID_BASE + (exp.experiment_id - EXPERIMENT_ID_BASE) * 10_000 + np.arange(n)
    sigma = height * size * rng.lognormal(0.0, 0.15, n)
    return pd.DataFrame(
        {
            "cell_specimen_id": ids.astype(np.int64),
            "rf_type": "dog" if inhibitory else "gabor",
            "x0": width * np.clip(cx + rng.normal(0, 0.08, n), 0.1, 0.9),
            "y0": height * np.clip(cy + rng.normal(0, 0.08, n), 0.1, 0.9),
            "sigma": sigma,
            "theta": rng.uniform(0, np.pi, n),
            "wavelength": sigma * rng.uniform(2.0, 3.0, n),
            "phase": rng.uniform(0, 2 * np.pi, n),
            "selectivity": rng.uniform(0.35, 0.6, n) if inhibitory else rng.uniform(0.85, 1.0, n),
            "peak_rate_hz": rng.lognormal(np.log(15.0), 0.3, n),
            "baseline_rate_hz": rng.uniform(0.5, 2.0, n),
            "noise_sd": rng.uniform(0.03, 0.06, n),
        }
    )


def rf_map(cell: dict | pd.Series, height: int, width: int) -> np.ndarray:
    """The planted receptive field of one cell on the stimulus grid, unit L2 norm."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    dx, dy = x - cell["x0"], y - cell["y0"]
    s = cell["sigma"]
    if cell["rf_type"] == "gabor":
        xr = dx * np.cos(cell["theta"]) + dy * np.sin(cell["theta"])
        yr = -dx * np.sin(cell["theta"]) + dy * np.cos(cell["theta"])
        env = np.exp(-(xr**2 + (0.8 * yr) ** 2) / (2 * s**2))
        m = env * np.cos(2 * np.pi * xr / cell["wavelength"] + cell["phase"])
    elif cell["rf_type"] == "dog":
        r2 = dx**2 + dy**2
        m = np.exp(-r2 / (2 * s**2)) - 0.5 * np.exp(-r2 / (2 * (2 * s) ** 2))
    else:
        raise ValueError(f"unknown rf_type {cell['rf_type']!r}")
    m = m - m.mean()
    return m / max(np.linalg.norm(m), 1e-12)


def rf_maps(cells: pd.DataFrame, height: int, width: int) -> np.ndarray:
    """Planted maps of all cells, (n_cells, height, width)."""
    return np.stack([rf_map(row, height, width) for _, row in cells.iterrows()])


def firing_rates(cells: pd.DataFrame, images: np.ndarray) -> np.ndarray:
    """Mean rate (Hz) of every cell to every image, (n_cells, n_images).

    Linear drive through the planted RF on globally z-scored pixels, mixed with an untuned
    luminance drive by (1 - selectivity), then a softplus nonlinearity.
    """
    n_img, h, w = images.shape
    z = (images - images.mean()) / images.std()
    maps = rf_maps(cells, h, w)
    drive = maps.reshape(len(cells), -1) @ z.reshape(n_img, -1).T
    drive = (drive - drive.mean(1, keepdims=True)) / (drive.std(1, keepdims=True) + 1e-12)
    lum = z.reshape(n_img, -1).mean(1)
    lum = (lum - lum.mean()) / (lum.std() + 1e-12)
    sel = cells["selectivity"].to_numpy()[:, None]
    return _rates_from_drive(sel * drive + (1 - sel) * lum[None, :], cells)


def _rates_from_drive(u: np.ndarray, cells: pd.DataFrame) -> np.ndarray:
    """Softplus of a standardised drive (n_cells, n_images), scaled to peak and baseline Hz."""
    nl = np.log1p(np.exp(2.0 * u - 1.0))
    nl /= np.log1p(np.exp(2.0 * 2.5 - 1.0))
    peak = cells["peak_rate_hz"].to_numpy()[:, None]
    return cells["baseline_rate_hz"].to_numpy()[:, None] + peak * nl


#: The views of a unit a layer-driven neuron can copy: the unit itself (what `match` finds),
#: its channel averaged over space (the paper's unit maps, `rf_rmse`) and that channel after
#: NeuRN (the paper's "NeuRN + feature maps", `rf_rmse_neurn`).
DRIVE_VIEWS = ("unit", "channel", "neurn")
#: Default shares of the neurons per view (relative weights)
DRIVE_MIX = {"unit": 2.0, "channel": 5.0, "neurn": 3.0}
DRIVE_NEURN = {"kernel_size": 5, "max_over": "image", "padding": "reflect"}


def view_counts(n: int, mix: dict) -> dict:
    """Neurons per view: ``n`` split in proportion to ``mix`` (largest remainders)."""
    unknown = set(mix) - set(DRIVE_VIEWS)
    if unknown:
        raise ValueError(f"layer drive: unknown views {sorted(unknown)}; known: {DRIVE_VIEWS}")
    w = np.array([float(mix.get(k, 0.0)) for k in DRIVE_VIEWS])
    if (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"layer drive: view shares must be >= 0, not all 0: {mix}")
    share = n * w / w.sum()
    counts = np.floor(share).astype(int)
    counts[np.argsort(counts - share, kind="stable")[: n - counts.sum()]] += 1
    return dict(zip(DRIVE_VIEWS, counts.tolist(), strict=True))


def layer_rates(
    activations: np.ndarray, cells: pd.DataFrame, rng, mix: dict | None = None
) -> np.ndarray:
    """Mean rate (Hz) of every cell to every image when each cell copies one model unit.

    ``activations``: one layer's views (views, n_images, n_units) in `DRIVE_VIEWS` order (see
    `model_layer_drive`), or one view (n_images, n_units). The cells are shared among the
    views as ``mix`` says (default `DRIVE_MIX`), in random order; each copies one unit of its
    view, drawn with ``rng`` among the units that vary across images (distinct units while
    there are enough). The copy is standardised over images and passed through the same
    softplus, peak and baseline scaling as `firing_rates` (no untuned luminance term, so the
    layer is the whole tuning). The truth goes to columns ``drive_view`` and ``drive_unit``
    of ``cells`` (existing columns are used as given). Returns (n_cells, n_images).
    """
    act = np.asarray(activations, dtype=np.float64)
    if act.ndim == 2:
        act, mix = act[None], {"unit": 1.0}
    if act.ndim != 3 or len(act) not in (1, len(DRIVE_VIEWS)):
        raise ValueError(f"layer drive: expected (views, n_images, n_units), got {act.shape}")
    views = DRIVE_VIEWS[: len(act)]
    sd = act.std(1)
    alive = [np.flatnonzero(v > 1e-6 * max(float(v.max()), 1e-300)) for v in sd]
    n = len(cells)
    if "drive_view" not in cells:
        counts = view_counts(n, DRIVE_MIX if mix is None else mix)
        labels = np.concatenate([np.full(counts[v], v, dtype=object) for v in views])
        if len(labels) != n:
            raise ValueError(f"layer drive: mix {mix} gives neurons to views not in {views}")
        cells["drive_view"] = rng.permutation(labels)
    view = np.array([views.index(v) for v in cells["drive_view"]], dtype=np.int64)
    if "drive_unit" not in cells:
        unit = np.full(n, -1, dtype=np.int64)
        for k, v in enumerate(views):
            at = np.flatnonzero(view == k)
            if at.size and alive[k].size == 0:
                raise ValueError(f"layer drive: every unit of view {v!r} is constant")
            if at.size:
                unit[at] = rng.choice(alive[k], size=at.size, replace=at.size > alive[k].size)
        cells["drive_unit"] = unit
    cells["rf_type"] = "layer"  # the planted RF parameters no longer describe the tuning
    unit = cells["drive_unit"].to_numpy(np.int64)
    if not all(np.isin(unit[view == k], alive[k]).all() for k in range(len(views))):
        raise ValueError("layer drive: drive_unit names a unit that is constant or absent")
    z = (act - act.mean(1, keepdims=True)) / np.where(sd > 0, sd, 1.0)[:, None]
    return _rates_from_drive(z[view, :, unit], cells)


def layer_views(out: np.ndarray, neurn: dict | None = None) -> np.ndarray:
    """(views, images, units) of one layer's output (images, C[, H, W]), `DRIVE_VIEWS` order.

    Units are the stored units, (c, y, x) for conv outputs: ``unit`` is the output itself,
    ``channel`` channel c averaged over space, ``neurn`` channel c of the NeuRN local-contrast
    maps averaged over space, as the comparison computes it with the same ``neurn`` settings
    (default `DRIVE_NEURN`). Flat outputs (images, units) have one view, repeated.
    """
    out = np.asarray(out, dtype=np.float64)
    n = out.shape[0]
    if out.ndim == 2:
        return np.stack([out] * len(DRIVE_VIEWS))
    if out.ndim != 4:
        raise ValueError(f"layer drive: expected (images, C[, H, W]) output, got {out.shape}")
    from .receptive_fields import channel_activity

    t, scale = channel_activity(out, {**DRIVE_NEURN, **(neurn or {})})
    if scale is not None:
        t = t / np.where(scale > 0, scale, 1.0)[:, None]
    views = [out] + [np.broadcast_to(v[:, :, None, None], out.shape) for v in (out.mean((2, 3)), t)]
    return np.stack(views).reshape(len(DRIVE_VIEWS), n, -1)


def model_layer_drive(
    images: np.ndarray,
    model_name: str,
    layer: str,
    models_table_path: str | Path,
    weights_dir: str | Path,
    seed: int = 0,
    batch_size: int = 64,
    neurn: dict | None = None,
) -> np.ndarray:
    """Views (views, n_images, n_units) of ``layer`` of zoo model ``model_name``, run on CPU.

    ``images`` (n, h, w) in 0-255 go through the zoo row's preprocessing; the model is built
    as activation extraction builds it (``zoo.build_model`` with the same ``seed``, so a
    random twin has the same weights). See `layer_views` for the views and units.
    """
    import torch

    from . import zoo
    from .activations import make_out_of_place

    specs = {s.name: s for s in zoo.read_zoo(models_table_path)}
    if model_name not in specs:
        raise ValueError(f"layer drive: no model {model_name!r} in {models_table_path}")
    spec = specs[model_name]
    model = zoo.build_model(spec, weights_dir, seed=seed).eval()
    make_out_of_place(model)
    modules = dict(model.named_modules())
    if layer not in modules:
        raise ValueError(f"layer drive: model {model_name!r} has no module {layer!r}")
    preprocess = zoo.make_preprocess(spec).eval()
    captured: list[torch.Tensor] = []

    def hook(module, inputs, output):
        out = output[0] if isinstance(output, (tuple, list)) else output
        captured.append(out.detach().float().clone())

    handle = modules[layer].register_forward_hook(hook)
    parts = []
    try:
        with torch.inference_mode():
            for a in range(0, len(images), batch_size):
                captured.clear()
                x = torch.from_numpy(np.asarray(images[a : a + batch_size], dtype=np.float32))
                model(preprocess(x))
                out = captured[0]
                parts.append(out.cpu().numpy())
    finally:
        handle.remove()
    out = np.concatenate(parts).astype(np.float64)
    if out.ndim == 3:  # (images, tokens, features), e.g. a ViT block: flat units
        out = out.reshape(len(out), -1)
    return layer_views(out, neurn)


# --------------------------------------------------------------------------- sessions


def presentation_sequence(n_repeats: int, rng: np.random.Generator) -> np.ndarray:
    """Image index per presentation: each block is a shuffle of the 118 images and one blank."""
    blocks = [rng.permutation(np.arange(-1, N_IMAGES)) for _ in range(n_repeats)]
    return np.concatenate(blocks).astype(np.int64)


def calcium_kernel(tau_rise_s=0.05, tau_decay_s=0.3, length_s=2.0, amplitude=0.15):
    """dF/F impulse response of one spike (GCaMP6f-like double exponential)."""
    t = np.arange(int(length_s * FRAME_RATE_HZ)) / FRAME_RATE_HZ
    k = (1 - np.exp(-t / tau_rise_s)) * np.exp(-t / tau_decay_s)
    return amplitude * k / k.max()


def simulate_session(
    exp: Experiment,
    images: np.ndarray,
    n_repeats: int,
    tail_frames: int = 120,
    drive: np.ndarray | None = None,
    mix: dict | None = None,
) -> dict:
    """All arrays of one session: traces, stimulus table, timestamps, planted cells.

    `tail_frames` of spontaneous activity follow the last presentation (a real three_session_B
    recording holds ~115,000 frames, most of them other stimuli). `drive` (views, n_images,
    n_units), when given, replaces the receptive-field drive: each cell copies one unit of one
    view, shared as `mix` says (see `layer_rates`; the cells table then holds `drive_view` and
    `drive_unit`).
    """
    rng = np.random.default_rng(exp.seed + 1)
    h, w = images.shape[1:]
    cells = plant_cells(exp, h, w)
    if drive is None:
        rates = firing_rates(cells, images)
    else:
        if drive.shape[-2] != len(images):
            raise ValueError(f"drive has {drive.shape[-2]} images, the stimuli {len(images)}")
        rates = layer_rates(drive, cells, np.random.default_rng(exp.seed + 2), mix)

    seq = presentation_sequence(n_repeats, rng)
    lead = 120
    starts = lead + np.floor(np.arange(len(seq)) * PRESENTATION_PERIOD_FRAMES).astype(np.int64)
    ends = starts + FRAMES_PER_PRESENTATION
    n_frames = int(ends[-1] + tail_frames)

    base = cells["baseline_rate_hz"].to_numpy()
    rate_frames = np.repeat(base[:, None], n_frames, axis=1)
    shown = seq >= 0
    for offset in range(FRAMES_PER_PRESENTATION):
        rate_frames[:, starts[shown] + offset] = rates[:, seq[shown]]
    spikes = rng.poisson(rate_frames / FRAME_RATE_HZ).astype(np.float64)
    kernel = calcium_kernel()
    calcium = np.stack([np.convolve(sp, kernel)[:n_frames] for sp in spikes])
    noise = rng.normal(size=calcium.shape) * cells["noise_sd"].to_numpy()[:, None]
    dff = (calcium + noise).astype(np.float32)

    t0 = 8.0 + rng.uniform(0, 1)
    timestamps = t0 + np.arange(n_frames) / FRAME_RATE_HZ + rng.normal(0, 2e-4, n_frames)
    f0 = rng.uniform(150, 500, len(cells))[:, None]
    neuropil = f0 * 0.4 * (1 + 0.05 * rng.normal(size=(len(cells), n_frames)))
    r = rng.uniform(0.6, 0.8, len(cells))
    corrected = f0 * (1 + dff)
    demixed = corrected + r[:, None] * neuropil
    running = np.abs(np.cumsum(rng.normal(0, 0.3, n_frames))) % 40
    return {
        "cells": cells,
        "rates": rates,
        "sequence": seq,
        "frame_duration": np.stack([starts, ends], 1),
        "dff": dff,
        "timestamps": timestamps,
        "demixed": demixed.astype(np.float32),
        "neuropil": neuropil.astype(np.float32),
        "r": r,
        "raw": demixed.astype(np.float32),
        "running": running.astype(np.float32),
    }


def genotype_for(cre_line: str) -> str:
    """A genotype string spelled as in real Visual Coding files."""
    if ei_class(cre_line) == "inhibitory":
        return f"{cre_line}/wt;Ai148(TIT2L-GC6f-ICL-tTA2)/wt"
    return f"{cre_line}/wt;Camk2a-tTA/wt;Ai93(TITL-GCaMP6f)/wt"


def _s(text: str) -> np.bytes_:
    """Fixed-length byte string: allensdk's metadata reader crashes on variable-length ones."""
    return np.bytes_(text.encode())


def write_nwb(path: str | Path, exp: Experiment, session: dict, images: np.ndarray) -> None:
    """Write a session as an Allen Visual Coding NWB 1.x file (plain HDF5)."""
    p = "processing/brain_observatory_pipeline"
    n_cells = len(session["cells"])
    with h5py.File(path, "w") as f:
        f["nwb_version"] = _s("NWB-1.0.5")
        f["identifier"] = _s(f"synthetic-{exp.experiment_id}")
        f["session_start_time"] = _s("Wed May 31 10:29:38 2017")
        f["file_create_date"] = _s("2017-06-01T00:00:00")
        g = f.create_group("general")
        g["session_id"] = _s(str(exp.experiment_id))
        g["experiment_container_id"] = _s(str(exp.container_id))
        g["session_type"] = _s("three_session_B")
        g["specimen_name"] = _s(f"{exp.cre_line};Camk2a-tTA;Ai93-{exp.experiment_id % 1_000_000}")
        g["fov"] = _s("400x400 microns (512 x 512 pixels)")
        g["generated_by"] = np.array([_s("mice2machines.synthetic"), _s("3.0")])
        g["devices/2-photon microscope"] = _s(
            "CAM2P.2. Nikon A1R-MP. Please see protocol for description"
        )
        subj = g.create_group("subject")
        subj["age"] = _s("114 days")
        subj["sex"] = _s("male")
        subj["genotype"] = _s(genotype_for(exp.cre_line))
        plane = g.create_group("optophysiology/imaging_plane_1")
        plane["imaging depth"] = _s(f"{exp.imaging_depth} microns")
        plane["location"] = _s(exp.area)
        plane["excitation_lambda"] = _s("910 nanometers")
        plane["indicator"] = _s("GCaMP6f")

        seg = f.create_group(f"{p}/ImageSegmentation")
        seg["cell_specimen_ids"] = session["cells"]["cell_specimen_id"].to_numpy(np.int64)
        seg["roi_ids"] = np.array([_s(str(1000 + i)) for i in range(n_cells)])
        dff = f.create_group(f"{p}/DfOverF/imaging_plane_1")
        dff["data"] = session["dff"]
        dff["timestamps"] = session["timestamps"]
        fl = f.create_group(f"{p}/Fluorescence")
        fl["imaging_plane_1/data"] = session["raw"]
        fl["imaging_plane_1/timestamps"] = session["timestamps"]
        fl["imaging_plane_1_demixed_signal/data"] = session["demixed"]
        fl["imaging_plane_1_neuropil_response/data"] = session["neuropil"]
        fl["imaging_plane_1_neuropil_response/r"] = session["r"]
        run = f.create_group(f"{p}/BehavioralTimeSeries/running_speed")
        run["data"] = session["running"]
        run["timestamps"] = session["timestamps"]

        tmpl = "stimulus/templates/natural_scenes_image_stack"
        f.create_group(tmpl)["data"] = images.astype(np.float32)
        pres = f.create_group("stimulus/presentation/natural_scenes_stimulus")
        pres["data"] = session["sequence"].astype(np.int64)
        pres["frame_duration"] = session["frame_duration"].astype(np.float64)
        pres["timestamps"] = session["timestamps"][session["frame_duration"][:, 0]]
        pres["indexed_timeseries"] = h5py.SoftLink(f"/{tmpl}")


def write_experiment(
    out_nwb: str | Path,
    out_cells: str | Path,
    row: dict,
    images: np.ndarray,
    cfg: dict,
    drive: np.ndarray | None = None,
) -> None:
    """Simulate one manifest row and write its NWB file and planted-cell table.

    `drive` (views, n_images, n_units): optional layer drive replacing the receptive fields,
    shared among the neurons as ``cfg["drive"]["mix"]`` says.
    """
    exp = Experiment(
        experiment_id=int(row["experiment_id"]),
        container_id=int(row["container_id"]),
        area=row["area"],
        cre_line=row["cre_line"],
        imaging_depth=int(row["imaging_depth"]),
        n_cells=int(row["n_cells"]),
        seed=int(cfg.get("seed", 0)) * 100_003 + int(row["experiment_id"]) % 100_000,
    )
    mix = (cfg.get("drive") or {}).get("mix")
    session = simulate_session(exp, images, int(cfg["n_repeats"]), drive=drive, mix=mix)
    write_nwb(out_nwb, exp, session, images)
    cells = session["cells"].copy()
    cells.insert(1, "experiment_id", exp.experiment_id)
    cells.insert(2, "area", exp.area)
    cells.insert(3, "cre_line", exp.cre_line)
    cells.to_csv(out_cells, sep="\t", index=False)


def planted_metadata(cfg: dict) -> str:
    """JSON describing the generator settings, stored beside the planted-cell tables."""
    return json.dumps({"generator": "mice2machines.synthetic", "config": cfg}, sort_keys=True)


# --------------------------------------------------------------------------- file-level steps


def write_template(path: str | Path, cfg: dict) -> np.ndarray:
    """Generate the stimulus stack for `cfg` and save it as .npy atomically."""
    from .io import atomic_path

    images = make_stimuli(int(cfg["image_height"]), int(cfg["image_width"]), int(cfg["seed"]))
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, images)
    return images


def write_manifest(path: str | Path, cfg: dict) -> pd.DataFrame:
    """The synthetic experiment manifest (same columns as Allen discovery, plus n_cells)."""
    from .io import atomic_path

    table = experiment_table(cfg)
    table["specimen_name"] = [
        f"{c};synthetic-{e % 1_000_000}"
        for c, e in zip(table.cre_line, table.experiment_id, strict=True)
    ]
    with atomic_path(path) as tmp:
        table.to_csv(tmp, sep="\t", index=False)
    return table


def write_session(
    template: str | Path,
    manifest: str | Path,
    experiment_id: int,
    out_nwb: str | Path,
    out_cells: str | Path,
    cfg: dict,
    drive: np.ndarray | None = None,
) -> None:
    """Simulate the manifest row of `experiment_id`; write NWB and planted cells atomically.

    `drive` (views, n_images, n_units): optional layer drive (see `model_layer_drive`).
    """
    from .io import atomic_path

    images = np.load(template)
    table = pd.read_csv(manifest, sep="\t")
    rows = table[table.experiment_id == int(experiment_id)]
    if rows.empty:
        raise ValueError(f"{manifest}: no experiment {experiment_id}")
    with atomic_path(out_nwb) as tmp_nwb, atomic_path(out_cells) as tmp_cells:
        write_experiment(tmp_nwb, tmp_cells, rows.iloc[0].to_dict(), images, cfg, drive)
