"""The paper's neuron selection: UMAP of the maps, K-means, the neurons nearest each centre.

All neurons' maps are embedded together (PCA to at most ``pca_components`` dimensions, then
UMAP to 2-D); within each E/I class K-means finds ``n_clusters`` clusters of the embedding and
each cluster contributes its ``per_class / n_clusters`` neurons nearest the centre (default
500 excitatory + 500 inhibitory = 2 x 10 clusters x 50). With ``balanced=True`` both classes
get min(per_class, n_excitatory, n_inhibitory) neurons; a cluster smaller than its quota gives
all its members and the class's remaining nearest-to-centre neurons fill the gap. Seeded and
deterministic (UMAP runs single-threaded with a random_state).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from ..io import as_str


def _defaults() -> dict:
    from ..settings import defaults

    cfg = defaults("compare")
    return {**cfg["selection"], "seed": cfg["seed"]}


#: compare.selection's defaults (schemas/compare.schema.yaml) and the section-wide seed
DEFAULTS = _defaults()


def embed(
    X: np.ndarray,
    method: str = DEFAULTS["embedding"],
    pca_components: int = DEFAULTS["pca_components"],
    n_neighbors: int = DEFAULTS["n_neighbors"],
    min_dist: float = DEFAULTS["min_dist"],
    seed: int = DEFAULTS["seed"],
) -> np.ndarray:
    """(n, 2) embedding of the rows of X: PCA, then UMAP (or the first 2 PCs, method='pca')."""
    from sklearn.decomposition import PCA

    X = np.asarray(X, dtype=np.float64).reshape(len(X), -1)
    n = len(X)
    k = max(1, min(pca_components, n - 1, X.shape[1])) if n > 1 else 1
    Z = (
        PCA(n_components=k, svd_solver="full", random_state=seed).fit_transform(X)
        if n > 1
        else np.zeros((n, 1))
    )
    if method == "pca" or n < 6:
        return np.pad(Z[:, :2], ((0, 0), (0, max(0, 2 - Z.shape[1]))))
    if method != "umap":
        raise ValueError(f"unknown embedding {method!r} (umap or pca)")
    import umap

    k = min(n_neighbors, n - 1)
    reducer = umap.UMAP(
        n_components=2,
        n_neighbors=k,
        min_dist=min_dist,
        random_state=seed,
        n_jobs=1,  # what a seed implies anyway (UMAP warns when it has to override it)
        init="spectral" if n > 10 else "random",
        precomputed_knn=exact_knn(Z, k) if n < EXACT_KNN_BELOW else (None, None, None),
    )
    with warnings.catch_warnings():
        # an exact kNN has no search index: only transform() of new data would need one
        warnings.filterwarnings("ignore", "precomputed_knn", UserWarning)
        return reducer.fit_transform(Z).astype(np.float64)


#: below this many rows the neighbours are exact (all distances), as UMAP's own small-data path
EXACT_KNN_BELOW = 4096


def exact_knn(Z: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, None]:
    """Each row's k nearest rows (itself first) and their Euclidean distances, from all pairs.

    What UMAP computes for small data, given to it precomputed: its own route compiles
    numba kernels in every new process (about 7 s of a demo's selection)."""
    from sklearn.metrics import pairwise_distances

    D = pairwise_distances(Z)
    idx = np.argsort(D, axis=1, kind="stable")[:, :k]
    return idx, np.take_along_axis(D, idx, 1), None


def _quotas(total: int, k: int) -> np.ndarray:
    q = np.full(k, total // k)
    q[: total % k] += 1
    return q


def _cluster_class(E: np.ndarray, m: int, n_clusters: int, seed: int):
    """K-means on the class embedding; (labels, distances to own centre, selected mask)."""
    from sklearn.cluster import KMeans

    n = len(E)
    k = max(1, min(n_clusters, m, n))
    km = KMeans(n_clusters=k, n_init=10, random_state=seed).fit(E)
    labels = km.labels_.astype(np.int64)
    dist = np.linalg.norm(E - km.cluster_centers_[labels], axis=1)
    chosen = np.zeros(n, dtype=bool)
    for c, q in enumerate(_quotas(m, k)):
        members = np.flatnonzero(labels == c)
        members = members[np.lexsort((members, dist[members]))]
        chosen[members[:q]] = True
    short = m - int(chosen.sum())
    if short > 0:  # clusters smaller than their quota: fill with the nearest remaining
        rest = np.flatnonzero(~chosen)
        rest = rest[np.lexsort((rest, dist[rest]))]
        chosen[rest[:short]] = True
    return labels, dist, chosen


def select_neurons(
    maps: np.ndarray,
    ei_class,
    cells=None,
    per_class: int = DEFAULTS["per_class"],
    n_clusters: int = DEFAULTS["n_clusters"],
    balanced: bool = DEFAULTS["balanced"],
    embedding: str = DEFAULTS["embedding"],
    pca_components: int = DEFAULTS["pca_components"],
    n_neighbors: int = DEFAULTS["n_neighbors"],
    min_dist: float = DEFAULTS["min_dist"],
    seed: int = DEFAULTS["seed"],
) -> pd.DataFrame:
    """Select neurons as the paper does; one row per neuron (selected or not).

    Columns: cell, ei_class, embed_x, embed_y, cluster (within its class), cluster_id
    ("excitatory-03"), distance (to its centre, embedding units), rank (within its cluster,
    0 = nearest), selected.
    """
    X = np.asarray(maps, dtype=np.float64).reshape(len(maps), -1)
    ei = as_str(ei_class)
    cells = np.arange(len(X)) if cells is None else np.asarray(cells)
    if not (len(ei) == len(X) == len(cells)):
        raise ValueError("maps, ei_class and cells differ in length")
    E = embed(X, embedding, pca_components, n_neighbors, min_dist, seed)
    classes = sorted(set(ei))
    counts = {c: int((ei == c).sum()) for c in classes}
    table = pd.DataFrame(
        {
            "cell": cells,
            "ei_class": ei,
            "embed_x": E[:, 0],
            "embed_y": E[:, 1],
            "cluster": -1,
            "cluster_id": "",
            "distance": np.nan,
            "rank": -1,
            "selected": False,
        }
    )
    m_bal = min([per_class] + list(counts.values()))
    for c in classes:
        idx = np.flatnonzero(ei == c)
        m = m_bal if balanced else min(per_class, counts[c])
        if m == 0:
            continue
        labels, dist, chosen = _cluster_class(E[idx], m, n_clusters, seed)
        table.loc[idx, "cluster"] = labels
        table.loc[idx, "cluster_id"] = [f"{c}-{lab:02d}" for lab in labels]
        table.loc[idx, "distance"] = dist
        table.loc[idx, "selected"] = chosen
    table["rank"] = (
        table.sort_values(["distance", "cell"])
        .groupby("cluster_id")
        .cumcount()
        .reindex(table.index)
        .astype(np.int64)
    )
    table.loc[table["cluster"] < 0, "rank"] = -1
    return table


def selection_table(neural, cfg: dict) -> pd.DataFrame:
    """The compare_select table of a prepared neural store (``cfg``: the rule's settings,
    ``selection`` and ``seed``), with each cell's area, Cre line and experiment."""
    table = select_neurons(
        neural["maps"].values,
        neural["ei_class"].values,
        neural["cell"].values,
        seed=int(cfg["seed"]),
        **cfg["selection"],
    )
    for c in ("area", "cre_line", "experiment_id"):
        table[c] = neural[c].values
    return table
