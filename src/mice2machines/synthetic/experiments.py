"""The synthetic experiments a config implies: ids, areas, Cre lines, cell counts."""

from __future__ import annotations

import dataclasses

import pandas as pd

from ..neural.labels import AREAS, ei_class, normalise_cre_line

N_IMAGES = 118


FRAME_RATE_HZ = 30.0


FRAMES_PER_PRESENTATION = 7


PRESENTATION_PERIOD_FRAMES = 7.5  # 250 ms at 30 Hz: onsets 7 or 8 frames apart, as recorded


EXPERIMENT_ID_BASE = 900_000_000


CONTAINER_ID_BASE = 800_000_000


CELL_ID_BASE = 700_000_000


MOUSE_ID_BASE = 600_000  # six digits, as Allen's donor names


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
    mouse: str = ""


def experiment_table(cfg: dict) -> pd.DataFrame:
    """The manifest of synthetic experiments implied by the `synthetic` config section.

    Same columns as the Allen discovery manifest (see `allen.MANIFEST_COLUMNS`), plus
    ``mouse``: one mouse per experiment, or ``mice.per_combination`` mice per area x Cre line
    taking its experiments in turn.
    """
    rows = []
    index = 0
    per = (cfg.get("mice") or {}).get("per_combination")
    mice = 0
    for area in cfg["areas"]:
        if area not in AREAS:
            raise ValueError(f"synthetic.areas: unknown area {area!r}; known: {AREAS}")
        for cre in cfg["cre_lines"]:
            cre = normalise_cre_line(cre)
            n_exp = cfg.get("experiments_per_combination", 1)
            for rep in range(n_exp):
                depth = (175, 275, 375)[rep % 3]
                mouse = MOUSE_ID_BASE + (index if per is None else mice + rep % int(per))
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
                        "mouse": str(mouse),
                    }
                )
                index += 1
            mice += 0 if per is None else min(int(per), n_exp)
    return pd.DataFrame(rows)
