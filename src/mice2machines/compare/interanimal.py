"""Inter-animal consistency ceilings: how well the other mice predict a held-out mouse.

For each neural group and each of its mice that has at least ``min_cells`` cells there, the
trial-averaged responses of all the group's cells of the OTHER mice are the features and the
held-out mouse's cells the targets, mapped with the same procedure as the model metric (same
folds, same penalty grid, same held-out score: the mapping callable). The group's ceiling is
the median of the held-out score over every held-out cell of every held-out mouse: the
score a "model" made of other animals reaches, under the very mapping the models are scored
with (mouse-vision's inter-animal consistency). It is not noise-corrected, like the model
scores it is set beside. A group with fewer than 2 such mice gets NaN and a reason.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from .gram import linear_gram

#: a mapping: (K (n, n) Gram of the features, Y (n, cells) targets, folds) -> (cells,) scores
MappingFn = Callable[[np.ndarray, np.ndarray, Sequence], np.ndarray]


def ridge_mapping(alphas: Sequence[float], cv_score: str = "fold_mean_r") -> MappingFn:
    """The ridge metric's mapping and score (compare.ridge_alphas, compare.cv_score)."""
    from .ridge import ridge_fold_scores, ridge_pooled_scores

    def mapping(K, Y, folds):
        if cv_score == "pooled":
            return ridge_pooled_scores(K, Y, alphas, folds)["score"]
        return ridge_fold_scores(K, Y, alphas, folds, fisher=cv_score == "fold_mean_z")["score"]

    return mapping


def pls_mapping(n_components: int, cv_score: str = "fold_mean_r") -> MappingFn:
    """The pls metric's mapping and score (compare.pls_components, compare.cv_score)."""
    from .pls import pls_fold_scores

    def mapping(K, Y, folds):
        how = {"fisher": cv_score == "fold_mean_z", "pooled": cv_score == "pooled"}
        return pls_fold_scores(K, Y, n_components, folds, **how)["score"]

    return mapping


#: metric name -> factory(compare settings) -> its mapping; a mapping metric adds itself here
MAPPINGS: dict[str, Callable[[Mapping], MappingFn]] = {
    "ridge": lambda cfg: ridge_mapping(cfg["ridge_alphas"], cfg["cv_score"]),
    "pls": lambda cfg: pls_mapping(cfg["pls_components"], cfg["cv_score"]),
}


def held_out_scores(
    means: np.ndarray,
    mice: np.ndarray,
    positions: np.ndarray,
    mapping: MappingFn,
    folds: Sequence,
    min_cells: int = 5,
) -> tuple[dict[str, np.ndarray], str]:
    """One group's held-out scores: ({mouse: (its cells,) scores}, reason).

    means (cells, images) trial means; mice (cells,) mouse labels; positions: the group's
    cells. Mice with at least ``min_cells`` cells in the group are held out in turn, each
    predicted from every other cell of the group. The reason is "" when at least 2 mice
    qualify, else why the group has no inter-animal ceiling (the dict is then empty).
    """
    positions = np.asarray(positions, dtype=np.int64)
    labels = np.asarray(mice).astype(str)[positions]
    names, counts = np.unique(labels, return_counts=True)
    held = names[counts >= int(min_cells)]
    if len(held) < 2:
        return {}, (
            f"{len(held)} of {len(names)} mice with >= {int(min_cells)} cells "
            "(an inter-animal ceiling needs 2)"
        )
    out = {}
    for mouse in held:
        src, tgt = positions[labels != mouse], positions[labels == mouse]
        K = linear_gram(means[src].T)
        out[str(mouse)] = np.asarray(mapping(K, means[tgt].T, folds), dtype=np.float64)
    return out, ""


def inter_animal_ceilings(
    means: np.ndarray,
    mice: np.ndarray,
    groups: Mapping[str, np.ndarray],
    mapping: MappingFn,
    folds: Sequence,
    min_cells: int = 5,
) -> dict[str, np.ndarray]:
    """Inter-animal ceilings of the neural groups ({name: cell positions}).

    Returns ``ceiling`` (G,): the median held-out score over the held-out cells of every
    held-out mouse (NaN where fewer than 2 mice have ``min_cells`` cells); ``n_mice`` (G,)
    the mice held out; ``reason`` (G,) str, "" where there is a ceiling.
    """
    ceiling, n_mice, reason = [], [], []
    for name in groups:
        scores, why = held_out_scores(means, mice, groups[name], mapping, folds, min_cells)
        values = np.concatenate(list(scores.values())) if scores else np.array([np.nan])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN: no usable target
            ceiling.append(float(np.nanmedian(values)))
        n_mice.append(len(scores))
        reason.append(why)
    return {
        "ceiling": np.array(ceiling, dtype=np.float64),
        "n_mice": np.array(n_mice, dtype=np.int64),
        "reason": np.array(reason, dtype=object),
    }
