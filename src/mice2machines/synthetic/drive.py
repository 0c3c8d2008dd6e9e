"""Layer-driven cells: each neuron copies one unit of a known layer of a known zoo model,
so the comparison can check that this layer ranks first."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..settings import defaults
from .cells import _rates_from_drive, with_mouse

#: The views of a unit a layer-driven neuron can copy: the unit itself (what `match` finds),
#: its channel averaged over space (the paper's unit maps, `rf_rmse`) and that channel after
#: NeuRN (the paper's "NeuRN + feature maps", `rf_rmse_neurn`).
DRIVE_VIEWS = ("unit", "channel", "neurn")


#: Default shares of the neurons per view (relative weights)
#: shares of the neurons per view (schemas/synthetic.schema.yaml: drive.mix)
DRIVE_MIX = defaults("synthetic")["drive"]["mix"]


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
    activations: np.ndarray,
    cells: pd.DataFrame,
    rng,
    mix: dict | None = None,
    own: np.ndarray | None = None,
    share: float = 0.0,
) -> np.ndarray:
    """Mean rate (Hz) of every cell to every image when each cell copies one model unit.

    ``activations``: one layer's views (views, n_images, n_units) in `DRIVE_VIEWS` order (see
    `model_layer_drive`), or one view (n_images, n_units). The cells are shared among the
    views as ``mix`` says (default `DRIVE_MIX`), in random order; each copies one unit of its
    view, drawn with ``rng`` among the units that vary across images (distinct units while
    there are enough). The copy is standardised over images and passed through the same
    softplus, peak and baseline scaling as `firing_rates` (no untuned luminance term, so the
    layer is the whole tuning). The truth goes to columns ``drive_view`` and ``drive_unit``
    of ``cells`` (existing columns are used as given). ``own``, ``share``: the mouse's own
    component and its share of the drive (`cells.with_mouse`). Returns (n_cells, n_images).
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
    return _rates_from_drive(with_mouse(z[view, :, unit], own, share), cells)


def layer_views(out: np.ndarray, neurn: dict | None = None) -> np.ndarray:
    """(views, images, units) of one layer's output (images, C[, H, W]), `DRIVE_VIEWS` order.

    Units are the stored units, (c, y, x) for conv outputs: ``unit`` is the output itself,
    ``channel`` channel c averaged over space, ``neurn`` channel c of the NeuRN local-contrast
    maps averaged over space, as the comparison computes it with the same ``neurn`` settings
    (partial settings are filled from schemas/neurn.schema.yaml). Flat outputs (images, units) have one view, repeated.
    """
    out = np.asarray(out, dtype=np.float64)
    n = out.shape[0]
    if out.ndim == 2:
        return np.stack([out] * len(DRIVE_VIEWS))
    if out.ndim != 4:
        raise ValueError(f"layer drive: expected (images, C[, H, W]) output, got {out.shape}")
    from ..compare.receptive_fields import channel_activity
    from ..neurn_settings import settings

    t, scale = channel_activity(out, settings(neurn or {}))
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

    from ..models import zoo
    from ..models.hooks import Recorder, make_out_of_place
    from ..models.preprocess import make_preprocess

    specs = {s.name: s for s in zoo.read_zoo(models_table_path)}
    if model_name not in specs:
        raise ValueError(f"layer drive: no model {model_name!r} in {models_table_path}")
    spec = specs[model_name]
    model = zoo.build_model(spec, weights_dir, seed=seed).eval()
    make_out_of_place(model)
    if layer not in dict(model.named_modules()):
        raise ValueError(f"layer drive: model {model_name!r} has no module {layer!r}")
    preprocess = make_preprocess(spec).eval()
    parts = []

    def sink(key, name, call, module, t):
        if call == 0:
            parts.append(t.detach().float().clone().cpu().numpy())

    with Recorder(model, [layer]) as rec, torch.inference_mode():
        for a in range(0, len(images), batch_size):
            x = torch.from_numpy(np.asarray(images[a : a + batch_size], dtype=np.float32))
            rec.run(lambda x=x: model(preprocess(x)), sink)
    out = np.concatenate(parts).astype(np.float64)
    if out.ndim == 3:  # (images, tokens, features), e.g. a ViT block: flat units
        out = out.reshape(len(out), -1)
    return layer_views(out, neurn)
