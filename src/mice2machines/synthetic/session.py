"""Sessions: presentations, calcium traces, and NWB 1 files in the Allen layout."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from ..neural.labels import ei_class
from .cells import firing_rates, mouse_component, plant_cells
from .drive import layer_rates
from .experiments import (
    FRAME_RATE_HZ,
    FRAMES_PER_PRESENTATION,
    N_IMAGES,
    PRESENTATION_PERIOD_FRAMES,
    Experiment,
    experiment_table,
)
from .stimuli import make_stimuli


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
    null: bool = False,
    mice: dict | None = None,
) -> dict:
    """All arrays of one session: traces, stimulus table, timestamps, planted cells.

    `tail_frames` of spontaneous activity follow the last presentation (a real three_session_B
    recording holds ~115,000 frames, most of them other stimuli). `drive` (views, n_images,
    n_units), when given, replaces the receptive-field drive: each cell copies one unit of one
    view, shared as `mix` says (see `layer_rates`; the cells table then holds `drive_view` and
    `drive_unit`). With `null`, every presentation drives the cells with the rates of an image
    drawn at random, not of the image shown: the same rates, spiking, calcium and noise, but no
    image-locked signal (the null dataset, where every metric should sit at chance). `mice`
    (config ``synthetic.mice``): with ``share`` > 0, that share of each cell's tuning is the
    own component of the experiment's mouse (`cells.mouse_component`).
    """
    rng = np.random.default_rng(exp.seed + 1)
    h, w = images.shape[1:]
    cells = plant_cells(exp, h, w)
    share, own = float((mice or {}).get("share", 0.0)), None
    if share > 0:
        own = mouse_component(
            _donor(exp),
            len(cells),
            len(images),
            int(mice.get("dims", 3)),
            int(mice.get("seed", 0)),
            np.random.default_rng(exp.seed + 4),
        )
    if drive is None:
        rates = firing_rates(cells, images, own, share)
    else:
        if drive.shape[-2] != len(images):
            raise ValueError(f"drive has {drive.shape[-2]} images, the stimuli {len(images)}")
        rates = layer_rates(drive, cells, np.random.default_rng(exp.seed + 2), mix, own, share)

    seq = presentation_sequence(n_repeats, rng)
    lead = 120
    starts = lead + np.floor(np.arange(len(seq)) * PRESENTATION_PERIOD_FRAMES).astype(np.int64)
    ends = starts + FRAMES_PER_PRESENTATION
    n_frames = int(ends[-1] + tail_frames)

    base = cells["baseline_rate_hz"].to_numpy()
    rate_frames = np.repeat(base[:, None], n_frames, axis=1)
    shown = seq >= 0
    driver = seq.copy()
    if null:
        decoy = np.random.default_rng(exp.seed + 3).integers(0, len(images), len(seq))
        driver = np.where(shown, decoy, seq)
    for offset in range(FRAMES_PER_PRESENTATION):
        rate_frames[:, starts[shown] + offset] = rates[:, driver[shown]]
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


def _donor(exp: Experiment) -> str:
    """The mouse's donor number (the specimen name's tail)."""
    return exp.mouse or str(exp.experiment_id % 1_000_000)


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
        g["specimen_name"] = _s(f"{exp.cre_line};Camk2a-tTA;Ai93-{_donor(exp)}")
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
        mouse=str(row.get("mouse", "")) if pd.notna(row.get("mouse", "")) else "",
    )
    kind = (cfg.get("drive") or {}).get("kind", "rf")
    mix = (cfg.get("drive") or {}).get("mix")
    mice = {**(cfg.get("mice") or {}), "seed": int(cfg.get("seed", 0))}
    session = simulate_session(
        exp, images, int(cfg["n_repeats"]), drive=drive, mix=mix, null=kind == "none", mice=mice
    )
    write_nwb(out_nwb, exp, session, images)
    cells = session["cells"].copy()
    cells.insert(1, "experiment_id", exp.experiment_id)
    cells.insert(2, "area", exp.area)
    cells.insert(3, "cre_line", exp.cre_line)
    cells.insert(4, "mouse", _donor(exp))
    cells.to_csv(out_cells, sep="\t", index=False)


def write_template(path: str | Path, cfg: dict) -> np.ndarray:
    """Generate the stimulus stack for `cfg` and save it as .npy atomically."""
    from ..io import atomic_path

    images = make_stimuli(int(cfg["image_height"]), int(cfg["image_width"]), int(cfg["seed"]))
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, images)
    return images


def write_manifest(path: str | Path, cfg: dict) -> pd.DataFrame:
    """The synthetic experiment manifest (same columns as Allen discovery, plus n_cells)."""
    from ..io import atomic_path

    table = experiment_table(cfg)
    table["specimen_name"] = [
        f"{c};Camk2a-tTA;Ai93-{m}" for c, m in zip(table.cre_line, table.mouse, strict=True)
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
    from ..io import atomic_path

    images = np.load(template)
    table = pd.read_csv(manifest, sep="\t")
    rows = table[table.experiment_id == int(experiment_id)]
    if rows.empty:
        raise ValueError(f"{manifest}: no experiment {experiment_id}")
    with atomic_path(out_nwb) as tmp_nwb, atomic_path(out_cells) as tmp_cells:
        write_experiment(tmp_nwb, tmp_cells, rows.iloc[0].to_dict(), images, cfg, drive)
