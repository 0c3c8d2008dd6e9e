"""PLS regression and sparse random projection: against scikit-learn (PLSRegression at
convergence, SparseRandomProjection with the same seed), on planted signal and on null data."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from mice2machines import devices
from mice2machines.compare import crossval, inference, pls, projection


def gram(X):
    Xc = X - X.mean(0)
    return Xc @ Xc.T


def data(seed, n=60, p=200, q=7, noise=2.0):
    g = np.random.default_rng(seed)
    X = g.normal(size=(n, p)) + 1.0
    Y = X[:, :3] @ g.normal(size=(3, q)) + noise * g.normal(size=(n, q)) + 3.0
    return X, Y


def sklearn_pls(X, Y, tr, te, k):
    """scikit-learn's PLSRegression(scale=False), its power method run to convergence."""
    from sklearn.cross_decomposition import PLSRegression

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Maximum number of iterations reached"
        model = PLSRegression(k, scale=False, tol=1e-300, max_iter=5000).fit(X[tr], Y[tr])
    return model.predict(X[te]).reshape(len(te), -1)


@pytest.mark.parametrize("q", [1, 3, 80])  # one cell; fewer cells than the rank; more
@pytest.mark.parametrize("k", [1, 4, 12])
def test_pls_equals_sklearn(q, k):
    X, Y = data(q + k, q=q)
    folds = crossval.kfold(len(X), 5, seed=1)
    out = pls.pls_fold_scores(gram(X), Y, k, folds)
    for f, (tr, te) in enumerate(folds):
        want = sklearn_pls(X, Y, tr, te, k)
        np.testing.assert_allclose(out["prediction"][te], want, rtol=0, atol=1e-9)
        r = crossval.pearson_cols(want, Y[te])
        np.testing.assert_allclose(out["fold_r"][f], r, atol=1e-9)
    np.testing.assert_allclose(out["score"], out["fold_r"].mean(0), rtol=1e-14)
    assert (out["n_components"] == k).all()
    z = pls.pls_fold_scores(gram(X), Y, k, folds, fisher=True)
    np.testing.assert_allclose(z["score"], np.tanh(np.arctanh(out["fold_r"]).mean(0)))
    pooled = pls.pls_fold_scores(gram(X), Y, k, folds, pooled=True)
    np.testing.assert_allclose(
        pooled["score"], crossval.pearson_cols(out["prediction"], Y), atol=1e-12
    )


def test_pls_rank_capped_degenerate_and_missing_cells():
    X, Y = data(5, p=3, q=6)
    folds = crossval.kfold(len(X), 4, seed=0)
    out = pls.pls_fold_scores(gram(X), Y, 25, folds)  # 3 units: 3 components at most
    assert (out["n_components"] == 3).all()
    for tr, te in folds:
        np.testing.assert_allclose(out["prediction"][te], sklearn_pls(X, Y, tr, te, 3), atol=1e-9)
    Yb = Y.copy()
    Yb[:, 1] = 2.0  # constant: NaN
    Yb[7, 4] = np.nan  # not finite: NaN, and left out of the joint fit
    bad = pls.pls_fold_scores(gram(X), Yb, 25, folds)
    assert np.isnan(bad["score"][[1, 4]]).all()
    rest = [0, 2, 3, 5]
    alone = pls.pls_fold_scores(gram(X), Y[:, [0, 1, 2, 3, 5]], 25, folds)
    np.testing.assert_allclose(bad["score"][rest], alone["score"][[0, 2, 3, 4]], atol=1e-12)
    zero = pls.pls_fold_scores(np.zeros((60, 60)), Y, 25, folds)
    assert (zero["n_components"] == 0).all() and np.isnan(zero["score"]).all()
    with pytest.raises(ValueError, match="n_components"):
        pls.pls_fold_scores(gram(X), Y, 0, folds)


def test_pls_null_equals_loop_blocks_and_torch(monkeypatch):
    X, Y = data(9, n=40, p=60, q=5)
    K = gram(X)
    folds = crossval.kfold(40, 4, seed=1)
    perms = np.concatenate([np.arange(40)[None], inference.permutations(40, 9, seed=5)])
    out = pls.pls_fold_scores(K, Y, 6, folds, perms)
    loop = np.stack([pls.pls_fold_scores(K, Y[p], 6, folds)["score"] for p in perms])
    np.testing.assert_allclose(out["null"], loop, rtol=0, atol=1e-10)
    np.testing.assert_allclose(out["null"][0], out["score"], rtol=0, atol=1e-12)
    monkeypatch.setattr(devices, "MAX_BLOCK_BYTES", 1)  # one permutation per block
    np.testing.assert_allclose(pls.pls_fold_scores(K, Y, 6, folds, perms)["null"], out["null"])
    pytest.importorskip("torch")
    t = pls.pls_fold_scores(K, Y, 6, folds, perms, device="torch:cpu")
    for key in ("score", "null", "prediction"):
        np.testing.assert_allclose(t[key], out[key], rtol=0, atol=1e-10)


def test_pls_planted_signal_and_scale_invariance():
    g = np.random.default_rng(10)
    n, P = 118, 99
    X = g.normal(size=(n, 40))
    Y = X @ g.normal(size=(40, 8)) + 3.0 * g.normal(size=(n, 8))
    folds = crossval.kfold(n, 5, 0)
    perms = inference.permutations(n, P)
    out = pls.pls_fold_scores(gram(X), Y, 10, folds, perms)
    assert (out["score"] > 0.5).all()
    np.testing.assert_allclose(inference.p_values(out["score"], out["null"]), 1 / (1 + P))
    assert np.abs(out["null"]).max() < 0.5
    for c in (1e-9, 1e6):
        scaled = pls.pls_fold_scores(gram(c * X), Y, 10, folds)
        np.testing.assert_allclose(scaled["prediction"], out["prediction"], rtol=1e-7)


def test_pls_null_calibration():
    """No signal: scores at chance, p-values uniform (with 99 permutations p <= 0.05 is a
    5 % test), no BH discoveries."""
    n, P, folds = 118, 99, crossval.kfold(118, 5, 0)
    p, score = [], []
    for seed in range(6):
        g = np.random.default_rng(300 + seed)
        K, Y = gram(g.normal(size=(n, 300))), g.normal(size=(n, 50))
        out = pls.pls_fold_scores(K, Y, 5, folds, inference.permutations(n, P, seed))
        p.append(inference.p_values(out["score"], out["null"]))
        score.append(out["score"])
    p = np.concatenate(p)
    assert abs(np.mean(score)) < 0.02
    assert abs(np.mean(p <= 0.05) - 0.05) < 0.025
    assert abs(np.mean(p <= 0.5) - 0.5) < 0.07
    assert np.mean(inference.bh_q(p) <= 0.05) <= 0.01


@pytest.mark.parametrize("n_components", [None, 300])
def test_projection_equals_sklearn(n_components):
    from sklearn.random_projection import SparseRandomProjection

    g = np.random.default_rng(2)
    X = g.normal(size=(118, 6000)).astype(np.float32)
    proj = projection.Projector(118, 6000, 0.1, n_components, seed=3)
    assert proj.dim == (n_components or 4089)
    for lo in range(0, 6000, 1700):  # chunks as the stream gives them
        proj.update(X[:, lo : lo + 1700])
    srp = SparseRandomProjection(
        n_components=n_components or "auto", eps=0.1, random_state=3, dense_output=True
    )
    want = srp.fit_transform(X.astype(np.float64))
    np.testing.assert_allclose(proj.out, want, rtol=0, atol=1e-10)
    np.testing.assert_allclose(proj.gram(), gram(want), rtol=1e-10, atol=1e-8)
    narrow = projection.Projector(118, 4089, 0.1, None, seed=3)
    assert not narrow.active and projection.target_dim(118, 4090, 0.1, None) == 4089


def test_projection_matrix_shared_by_layers_of_one_width():
    cache = {}
    a = projection.Projector(50, 3000, 0.5, None, seed=1, cache=cache)
    b = projection.Projector(50, 3000, 0.5, None, seed=1, cache=cache)
    assert a.Rt is b.Rt and len(cache) == 1
    fresh = projection.Projector(50, 3000, 0.5, None, seed=1)
    assert (fresh.Rt != a.Rt).nnz == 0
    for width in range(3001, 3001 + projection.KEEP + 2):
        projection.Projector(50, width, 0.5, None, seed=1, cache=cache)
    assert len(cache) == projection.KEEP
