"""The paper's neuron selection: UMAP + K-means + nearest to each centre, balanced E/I."""

from __future__ import annotations

import numpy as np
import pytest

from mice2machines.compare import selection


def blobs(n_exc, n_inh, seed=0, centres=6, dim=30):
    g = np.random.default_rng(seed)
    c = g.normal(size=(centres, dim)) * 4
    n = n_exc + n_inh
    maps = c[g.integers(0, centres, n)] + g.normal(size=(n, dim))
    ei = np.array(["excitatory"] * n_exc + ["inhibitory"] * n_inh)
    return maps, ei


def test_umap_selection_balanced_and_deterministic():
    pytest.importorskip("umap")
    maps, ei = blobs(150, 90)
    cells = np.arange(1000, 1240)
    a = selection.select_neurons(maps, ei, cells, per_class=40, n_clusters=4, seed=3)
    b = selection.select_neurons(maps, ei, cells, per_class=40, n_clusters=4, seed=3)
    assert a.equals(b)  # seeded: the same table twice
    sel = a[a.selected]
    assert sel.groupby("ei_class").size().to_dict() == {"excitatory": 40, "inhibitory": 40}
    assert (sel.groupby("cluster_id").size() == 10).all()  # 4 clusters x 10 per class
    assert set(a.columns) >= {
        "cell",
        "ei_class",
        "embed_x",
        "embed_y",
        "cluster",
        "cluster_id",
        "distance",
        "rank",
        "selected",
    }
    # the chosen ones are the nearest to their centre within each cluster
    for _, grp in a.groupby("cluster_id"):
        chosen = grp[grp.selected].distance
        assert chosen.max() <= grp[~grp.selected].distance.min() + 1e-12
        assert sorted(grp[grp.selected]["rank"]) == list(range(len(chosen)))


def test_fewer_neurons_than_asked_and_small_clusters():
    maps, ei = blobs(30, 12, seed=1)
    t = selection.select_neurons(maps, ei, per_class=500, n_clusters=10, embedding="pca")
    counts = t[t.selected].groupby("ei_class").size().to_dict()
    assert counts == {"excitatory": 12, "inhibitory": 12}  # balanced: the smaller class
    t = selection.select_neurons(
        maps, ei, per_class=500, n_clusters=10, embedding="pca", balanced=False
    )
    counts = t[t.selected].groupby("ei_class").size().to_dict()
    assert counts == {"excitatory": 30, "inhibitory": 12}
    # uneven clusters: quotas filled from the remaining nearest neurons, total exact
    g = np.random.default_rng(2)
    maps = np.concatenate([g.normal(size=(3, 5)) + 50, g.normal(size=(40, 5))])
    t = selection.select_neurons(
        maps, ["excitatory"] * 43, per_class=20, n_clusters=2, embedding="pca"
    )
    assert t.selected.sum() == 20


def test_single_class_and_errors():
    maps, _ = blobs(25, 0, seed=4)
    t = selection.select_neurons(
        maps, ["inhibitory"] * 25, per_class=10, n_clusters=2, embedding="pca"
    )
    assert t.selected.sum() == 10
    with pytest.raises(ValueError):
        selection.select_neurons(maps, ["excitatory"] * 3)
    with pytest.raises(ValueError):
        selection.embed(maps, method="tsne")


def test_exact_neighbours_give_umaps_own_small_data_graph():
    umap = pytest.importorskip("umap")
    from sklearn.neighbors import NearestNeighbors

    Z, _ = blobs(200, 100, seed=2, dim=12)
    idx, dist, index = selection.exact_knn(Z, 15)
    d_ref, i_ref = NearestNeighbors(n_neighbors=15).fit(Z).kneighbors(Z)
    np.testing.assert_array_equal(idx, i_ref)
    np.testing.assert_allclose(dist, d_ref, atol=1e-9)
    assert index is None and (idx[:, 0] == np.arange(len(Z))).all()  # itself first
    own = umap.UMAP(n_neighbors=15, random_state=0, n_jobs=1, n_epochs=1).fit(Z)
    given = umap.UMAP(
        n_neighbors=15, random_state=0, n_jobs=1, n_epochs=1, precomputed_knn=(idx, dist, None)
    )
    with pytest.warns(UserWarning, match="precomputed_knn"):
        given.fit(Z)
    assert own._small_data and not given._small_data  # two routes, one fuzzy graph
    np.testing.assert_allclose(given.graph_.toarray(), own.graph_.toarray(), atol=1e-5)


def test_embedding_is_quiet():
    pytest.importorskip("umap")
    import warnings

    maps = np.random.default_rng(0).normal(size=(100, 20))  # one connected cloud
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        E = selection.embed(maps, n_neighbors=10, seed=1)
    assert E.shape == (100, 2) and np.isfinite(E).all()
