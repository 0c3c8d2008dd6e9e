"""Architecture similarity (NeuRN paper 2): layer sequences as letters, Needleman-Wunsch.

Each network becomes a string, one letter per layer (``LETTERS``): walking the module tree, a
module whose class (or a base class) has a letter is emitted and not descended into (so a
``Conv2d`` subclass with a padding child is one ``C``, ``MultiheadAttention`` one ``T``);
containers are descended; other leaves are ``X``; ``Identity`` is skipped. Functional ops
(``F.relu`` in a forward, residual ``+``) are invisible to this encoding.

Two strings are compared by global alignment with linear gap penalties; a model x model
matrix of normalised scores, a heatmap, and a greedy max-min shortlist of diverse models
follow.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

LETTERS: dict[str, str] = {
    **dict.fromkeys(
        ["Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d"], "C"
    ),
    **dict.fromkeys(["ReLU", "ReLU6", "LeakyReLU", "PReLU", "ELU", "SELU", "CELU", "RReLU"], "R"),
    **dict.fromkeys(
        [
            "GELU",
            "SiLU",
            "Hardswish",
            "Hardsigmoid",
            "Sigmoid",
            "Tanh",
            "Mish",
            "Softplus",
            "Swish",
            "MemoryEfficientSwish",
            "Hardtanh",
        ],
        "A",
    ),  # fmt: skip
    **dict.fromkeys(
        ["MaxPool1d", "MaxPool2d", "MaxPool3d", "AdaptiveMaxPool1d", "AdaptiveMaxPool2d"], "M"
    ),
    **dict.fromkeys(["AvgPool1d", "AvgPool2d", "AvgPool3d"], "P"),
    **dict.fromkeys(["AdaptiveAvgPool1d", "AdaptiveAvgPool2d", "AdaptiveAvgPool3d"], "G"),
    **dict.fromkeys(["Linear", "Bilinear", "LazyLinear"], "L"),
    **dict.fromkeys(
        ["Dropout", "Dropout1d", "Dropout2d", "Dropout3d", "AlphaDropout", "StochasticDepth"], "D"
    ),
    **dict.fromkeys(["BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "SyncBatchNorm"], "B"),
    **dict.fromkeys(
        [
            "LayerNorm",
            "GroupNorm",
            "InstanceNorm1d",
            "InstanceNorm2d",
            "LocalResponseNorm",
            "RMSNorm",
        ],
        "N",
    ),
    "MultiheadAttention": "T",
    **dict.fromkeys(["Flatten", "Unflatten"], "F"),
    **dict.fromkeys(["Softmax", "LogSoftmax", "Softmax2d"], "S"),
    **dict.fromkeys(["ZeroPad2d", "ConstantPad2d", "ReflectionPad2d", "ReplicationPad2d"], "Z"),
    "Embedding": "E",
    "Upsample": "U",
    "NeuRN": "K",
}
SKIP = ("Identity",)
OTHER = "X"
NORMALIZE = ("none", "max", "mean")


def _letter(module, letters: Mapping[str, str]) -> str | None:
    for cls in type(module).__mro__:
        if cls.__name__ in letters:
            return letters[cls.__name__]
    return None


def layer_sequence(
    model, letters: Mapping[str, str] | None = None, skip: Sequence[str] = SKIP
) -> str:
    """The model's layers as letters, in registration order (see the module docstring)."""
    letters = LETTERS if letters is None else letters
    out: list[str] = []

    def walk(m):
        for child in m.children():
            name = type(child).__name__
            if name in skip:
                continue
            letter = _letter(child, letters)
            if letter is not None:
                out.append(letter)
            elif any(True for _ in child.children()):
                walk(child)
            else:
                out.append(OTHER)

    walk(model)
    return "".join(out)


def nw_score(
    a: str, b: str, match: float = 1.0, mismatch: float = -1.0, gap: float = -1.0
) -> float:
    """Needleman-Wunsch global alignment score with a linear gap penalty.

    Row by row in numpy: within a row, F[i, j] = max(t_j, F[i, j-1] + gap) unrolls to
    j * gap + cummax_k(t_k - k * gap), so each row is a handful of vector ops.
    """
    if len(a) < len(b):
        a, b = b, a
    m = len(b)
    bb = np.frombuffer(b.encode("utf-32-le"), dtype=np.uint32)
    j = np.arange(m + 1, dtype=float)
    prev = j * gap
    for i, ch in enumerate(a, start=1):
        s = np.where(bb == ord(ch), match, mismatch)
        t = np.empty(m + 1)
        t[0] = i * gap
        t[1:] = np.maximum(prev[:-1] + s, prev[1:] + gap)
        prev = j * gap + np.maximum.accumulate(t - j * gap)
    return float(prev[-1])


def nw_align(
    a: str, b: str, match: float = 1.0, mismatch: float = -1.0, gap: float = -1.0
) -> tuple[float, str, str]:
    """Score and one optimal alignment (``-`` for gaps); ties prefer diagonal, then gap in b."""
    n, m = len(a), len(b)
    F = np.zeros((n + 1, m + 1))
    F[:, 0] = np.arange(n + 1) * gap
    F[0, :] = np.arange(m + 1) * gap
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            s = match if a[i - 1] == b[j - 1] else mismatch
            F[i, j] = max(F[i - 1, j - 1] + s, F[i - 1, j] + gap, F[i, j - 1] + gap)
    i, j, ra, rb = n, m, [], []
    while i > 0 or j > 0:
        s = match if i and j and a[i - 1] == b[j - 1] else mismatch
        if i and j and F[i, j] == F[i - 1, j - 1] + s:
            ra.append(a[i - 1])
            rb.append(b[j - 1])
            i, j = i - 1, j - 1
        elif i and F[i, j] == F[i - 1, j] + gap:
            ra.append(a[i - 1])
            rb.append("-")
            i -= 1
        else:
            ra.append("-")
            rb.append(b[j - 1])
            j -= 1
    return float(F[n, m]), "".join(reversed(ra)), "".join(reversed(rb))


def normalise(score: float, la: int, lb: int, match: float, how: str) -> float:
    """``max``: score / (match * max length), 1 for identical strings; ``mean``: over the
    mean length; ``none``: the raw score."""
    if how == "none":
        return score
    if how == "max":
        return score / (match * max(la, lb, 1))
    if how == "mean":
        return score / (match * max((la + lb) / 2, 1))
    raise ValueError(f"normalize must be one of {NORMALIZE}, got {how!r}")


def similarity_matrix(
    sequences: Mapping[str, str],
    match: float = 1.0,
    mismatch: float = -1.0,
    gap: float = -1.0,
    normalize: str = "max",
) -> pd.DataFrame:
    """Model x model alignment scores (symmetric DataFrame indexed by model name)."""
    names = list(sequences)
    out = np.zeros((len(names), len(names)))
    for i, a in enumerate(names):
        for j in range(i, len(names)):
            b = names[j]
            raw = nw_score(sequences[a], sequences[b], match, mismatch, gap)
            out[i, j] = out[j, i] = normalise(
                raw, len(sequences[a]), len(sequences[b]), match, normalize
            )
    return pd.DataFrame(
        out, index=pd.Index(names, name="model"), columns=pd.Index(names, name="other")
    )


def shortlist(sim: pd.DataFrame, k: int, start: str | None = None) -> list[str]:
    """A diverse subset of ``k`` models: greedy max-min on similarity.

    Starts from ``start`` (default: the model least similar to the others on average), then
    repeatedly adds the model whose highest similarity to those chosen is lowest.
    """
    names = list(sim.index)
    k = min(k, len(names))
    if k <= 0:
        return []
    vals = sim.to_numpy(dtype=float)
    if start is None:
        off = vals.copy()
        np.fill_diagonal(off, np.nan)
        start = names[int(np.nanargmin(np.nanmean(off, axis=1)))] if len(names) > 1 else names[0]
    chosen = [names.index(start)]
    while len(chosen) < k:
        rest = [i for i in range(len(names)) if i not in chosen]
        worst = vals[np.ix_(rest, chosen)].max(axis=1)
        chosen.append(rest[int(np.argmin(worst))])
    return [names[i] for i in chosen]


def cluster_order(sim: pd.DataFrame) -> list[str]:
    """Model order from average-linkage clustering of (max - similarity), for heatmaps."""
    if len(sim) < 3:
        return list(sim.index)
    from scipy.cluster.hierarchy import leaves_list, linkage
    from scipy.spatial.distance import squareform

    vals = sim.to_numpy(dtype=float)
    d = vals.max() - (vals + vals.T) / 2
    np.fill_diagonal(d, 0)
    return [sim.index[i] for i in leaves_list(linkage(squareform(d, checks=False), "average"))]


def plot_similarity(sim: pd.DataFrame, path=None, title: str | None = None, cluster: bool = True):
    """Heatmap of a similarity matrix (clustered order by default); saved if ``path`` given."""
    from ..plotting import pyplot, tight

    plt = pyplot()
    order = cluster_order(sim) if cluster else list(sim.index)
    data = sim.loc[order, order]
    size = max(4.0, 0.35 * len(order) + 2)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    im = ax.imshow(data.to_numpy(), cmap="viridis")
    ax.set_xticks(range(len(order)), order, rotation=90, fontsize=8)
    ax.set_yticks(range(len(order)), order, fontsize=8)
    fig.colorbar(im, ax=ax, label="alignment similarity")
    ax.set_xlabel("architecture")
    ax.set_ylabel("architecture")
    ax.set_title(title or "Needleman-Wunsch similarity\nof layer sequences", fontsize=10)
    tight(fig)
    if path is not None:
        fig.savefig(path, dpi=150)
    return fig


def zoo_sequences(specs) -> dict[str, str]:
    """Layer strings of the distinct architectures of zoo rows (``zoo.ModelSpec``), built on
    the meta device. Twins share one entry, labelled by architecture (``+neurn`` when the
    network itself holds NeuRN)."""
    from . import zoo

    out: dict[str, str] = {}
    for spec in specs:
        owns = zoo.BUILDERS[spec.source].owns_neurn and spec.neurn_config is not None
        label = spec.arch + ("+neurn" if owns else "")
        if label not in out:
            out[label] = layer_sequence(zoo.build_architecture(spec))
    return out
