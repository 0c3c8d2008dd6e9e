"""Permutation nulls, p and q values: against plain reference loops and scipy / scikit-learn,
on planted signal, and for calibration on data without signal."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from scipy.stats import false_discovery_control

from mice2machines import devices
from mice2machines import similarity as S
from mice2machines.compare import crossval
from mice2machines.compare import inference as I
from mice2machines.compare import ridge as R

HAS_TORCH = importlib.util.find_spec("torch") is not None


def rng(seed=0):
    return np.random.default_rng(seed)


def gram(X):
    Xc = X - X.mean(0)
    return Xc @ Xc.T


def square(v):
    m = v.shape[-1]
    n = int(round((1 + np.sqrt(1 + 8 * m)) / 2))
    out = np.zeros(v.shape[:-1] + (n, n))
    i, j = np.triu_indices(n, k=1)
    out[..., i, j] = v
    out[..., j, i] = v
    return out


def rdm_vectors(g, k, n, p):
    return np.stack([S.upper_tri(S.rdm(g.normal(size=(n, p)))) for _ in range(k)])


# ------------------------------------------------------------------ permutations, p, q


def test_permutations_seeded_and_valid():
    P = I.permutations(30, 50, seed=4)
    assert P.shape == (50, 30) and P.dtype == np.int64
    np.testing.assert_array_equal(np.sort(P, axis=1), np.tile(np.arange(30), (50, 1)))
    np.testing.assert_array_equal(P, I.permutations(30, 50, seed=4))
    assert not np.array_equal(P, I.permutations(30, 50, seed=5))
    assert len({tuple(r) for r in P}) == 50
    # a stream of its own: not kfold's shuffle of the same seed
    assert not np.array_equal(P[0], rng(4).permutation(30))
    assert I.permutations(30, 0, seed=4).shape == (0, 30)
    with pytest.raises(ValueError):
        I.p_values(np.zeros(3), np.zeros((4, 2)))
    with pytest.raises(ValueError, match="permutation"):
        I.rsa_null(np.ones((1, 6)), np.ones((1, 6)), np.zeros((2, 4), dtype=int))


def test_p_values_by_hand():
    obs = np.array([0.5, np.nan, 0.2, 0.3])
    null = np.array(
        [
            [0.1, 0.0, 0.3, np.nan],
            [0.5, 0.0, 0.1, np.nan],
            [0.7, 0.0, np.nan, np.nan],
            [0.2, 0.0, 0.0, np.nan],
        ]
    )
    # ties count against the observed score; NaN nulls are not counted at all
    np.testing.assert_allclose(I.p_values(obs, null), [3 / 5, np.nan, 2 / 4, np.nan])
    np.testing.assert_allclose(I.p_values(obs, null, False), [4 / 5, np.nan, 3 / 4, np.nan])
    assert I.p_values(0.9, np.zeros(99)) == pytest.approx(1 / 100)
    assert np.isnan(I.p_values(np.zeros(2), np.zeros((0, 2)))).all()


def test_null_summary_directions():
    g = rng(1)
    null = g.normal(size=(200, 3, 4))
    null[5, 0, 0] = np.nan
    obs = 3.0 + 0.1 * g.normal(size=(3, 4))
    out = I.null_summary(obs, null)
    mean, sd = np.nanmean(null, 0), np.nanstd(null, 0, ddof=1)
    np.testing.assert_allclose(out["null_mean"], mean, rtol=1e-12)
    np.testing.assert_allclose(out["null_sd"], sd, rtol=1e-12)
    np.testing.assert_allclose(out["corrected"], obs - mean, rtol=1e-12)
    np.testing.assert_allclose(out["z"], (obs - mean) / sd, rtol=1e-12)
    np.testing.assert_array_equal(out["p"], I.p_values(obs, null))
    # lower is better (an RMSE): a score below the null is positive z, small p
    low = I.null_summary(-obs, -null, higher_is_better=False)
    np.testing.assert_allclose(low["z"], out["z"], rtol=1e-12)
    np.testing.assert_allclose(low["corrected"], -out["corrected"], rtol=1e-12)
    np.testing.assert_array_equal(low["p"], out["p"])
    assert (low["z"] > 2).all() and (low["p"] < 0.05).all()


def test_bh_q_equals_scipy():
    g = rng(2)
    p = g.uniform(size=(6, 40)) ** 3
    p[:, ::7] = np.round(p[:, ::7], 2)  # ties
    p[1, 3] = p[4, 10] = p[4, 11] = np.nan
    q = I.bh_q(p)
    ok = np.isfinite(p)
    np.testing.assert_allclose(q[ok], false_discovery_control(p[ok], method="bh"), rtol=1e-13)
    assert np.isnan(q[~ok]).all()
    order = np.argsort(p[ok])
    assert (np.diff(q[ok][order]) >= 0).all() and (q[ok] <= 1).all() and (q[ok] >= p[ok]).all()
    for axis in (0, 1):
        qa = I.bh_q(p, axis=axis)
        for i in range(p.shape[1 - axis]):
            row, qrow = np.take(p, i, axis=1 - axis), np.take(qa, i, axis=1 - axis)
            f = np.isfinite(row)
            expected = false_discovery_control(row[f], method="bh")
            np.testing.assert_allclose(qrow[f], expected, rtol=1e-13)
            assert np.isnan(qrow[~f]).all()
    assert np.isnan(I.bh_q(np.full(4, np.nan))).all()
    with pytest.raises(ValueError):
        I.bh_q([0.5, 1.5])


# ------------------------------------------------------------------ RSA and CKA nulls


def rsa_loop(a, b, perms, method):
    D = square(a)
    return np.stack([S.rsa(S.upper_tri(D[:, p][:, :, p]), b, method) for p in perms])


@pytest.mark.parametrize("method", ["spearman", "pearson", "rho-a", "cosine"])
def test_rsa_null_equals_loop(method, monkeypatch):
    g = rng(3)
    n = 14
    a = np.round(rdm_vectors(g, 3, n, 5), 1)  # rounded: ranks with ties
    b = rdm_vectors(g, 4, n, 8)
    perms = I.permutations(n, 23, seed=1)
    expected = rsa_loop(a, b, perms, method)
    np.testing.assert_allclose(I.rsa_null(a, b, perms, method), expected, rtol=0, atol=1e-10)
    monkeypatch.setattr(devices, "MAX_BLOCK_BYTES", 8 * 6 * a.shape[1] * 5)  # blocks of 5
    null = I.rsa_null(a, b, perms, method)
    np.testing.assert_allclose(null, expected, rtol=0, atol=1e-10)
    obs = S.rsa(a, b, method)
    np.testing.assert_array_equal(I.p_values(obs, null), I.p_values(obs, expected))


def test_rsa_null_non_finite_and_planted():
    g = rng(4)
    n = 20
    model = g.normal(size=(n, 30))
    b = S.upper_tri(S.rdm(model))[None]
    a = np.stack([S.upper_tri(S.rdm(model + 0.5 * g.normal(size=model.shape))) for _ in range(3)])
    a[2, 5] = np.nan
    perms = I.permutations(n, 99, seed=0)
    null = I.rsa_null(a, b, perms)
    assert np.isnan(null[:, 2]).all() and np.isfinite(null[:, :2]).all()
    p = I.p_values(S.rsa(a, b), null)
    np.testing.assert_allclose(p[:2], 1 / 100)
    assert np.isnan(p[2])


@pytest.mark.parametrize("unbiased", [True, False])
def test_cka_null_equals_loop(unbiased, monkeypatch):
    g = rng(5)
    n = 12
    K = np.stack([gram(g.normal(size=(n, 7))) for _ in range(3)])
    M = np.stack([gram(g.normal(size=(n, 9))) for _ in range(2)])
    perms = I.permutations(n, 17, seed=2)
    expected = np.stack([S.cka_from_grams(K[:, p][:, :, p], M, unbiased) for p in perms])
    np.testing.assert_allclose(I.cka_null(K, M, perms, unbiased), expected, rtol=0, atol=1e-10)
    monkeypatch.setattr(devices, "MAX_BLOCK_BYTES", 8 * 4 * n * n * 4)  # blocks of 4
    null = I.cka_null(K, M, perms, unbiased)
    np.testing.assert_allclose(null, expected, rtol=0, atol=1e-10)
    obs = S.cka_from_grams(K, M, unbiased)
    np.testing.assert_array_equal(I.p_values(obs, null), I.p_values(obs, expected))


def test_cka_null_chance_and_planted():
    g = rng(6)
    n, width = 30, 400
    X = g.normal(size=(n, width))
    noise = gram(g.normal(size=(n, width)))
    planted = gram(X + g.normal(size=X.shape))
    perms = I.permutations(n, 199, seed=3)
    unb = I.cka_null(np.stack([noise, planted]), gram(X), perms)
    biased = I.cka_null(noise, gram(X), perms, unbiased=False)
    assert abs(np.mean(unb[:, 0])) < 0.02  # unbiased CKA: chance level 0
    assert np.mean(biased) > 0.3  # biased CKA: inflated by width over few images
    obs = S.cka_from_grams(np.stack([noise, planted]), gram(X))
    p = I.p_values(obs, unb)
    assert p[1, 0] == pytest.approx(1 / 200) and p[0, 0] > 0.01


# ------------------------------------------------------------------ ridge


def ridge_data(seed, n=50, p=80, cells=6, noise=3.0):
    g = rng(seed)
    X = g.normal(size=(n, p)) + 2.0
    snr = np.geomspace(0.05, 3, cells)
    Y = (X[:, :6] @ g.normal(size=(6, cells))) * snr + noise * g.normal(size=(n, cells)) + 1
    return X, Y


def train_scale(X, tr):
    Xt = X[tr] - X[tr].mean(0)
    return (Xt * Xt).sum() / len(tr)


def test_ridge_one_alpha_equals_sklearn_ridge():
    from sklearn.linear_model import Ridge

    X, Y = ridge_data(7)
    folds = S.kfold(len(X), 5, seed=2)
    out = R.ridge_fold_scores(gram(X), Y, [0.3], folds)
    for f, (tr, te) in enumerate(folds):
        a = 0.3 * train_scale(X, tr)
        np.testing.assert_allclose(out["alpha"][f], a, rtol=1e-12)
        pred = Ridge(alpha=a).fit(X[tr], Y[tr]).predict(X[te])
        np.testing.assert_allclose(out["prediction"][te], pred, rtol=1e-8, atol=1e-8)
        np.testing.assert_allclose(out["fold_r"][f], S.pearson_rows(pred.T, Y[te].T), atol=1e-6)
    np.testing.assert_allclose(out["score"], out["fold_r"].mean(0), rtol=1e-14)
    fz = R.ridge_fold_scores(gram(X), Y, [0.3], folds, fisher=True)
    np.testing.assert_allclose(fz["score"], np.tanh(np.arctanh(out["fold_r"]).mean(0)))
    score, fold_r = crossval.fold_scores(out["prediction"], Y, folds)
    np.testing.assert_allclose(fold_r, out["fold_r"], atol=1e-12)
    np.testing.assert_allclose(score, out["score"], atol=1e-12)
    pooled = R.ridge_pooled_scores(gram(X), Y, [0.3], folds)
    np.testing.assert_allclose(
        pooled["score"], S.pearson_rows(out["prediction"].T, Y.T), atol=1e-12
    )


def test_ridge_loo_alpha_equals_ridgecv():
    from sklearn.linear_model import RidgeCV

    X, Y = ridge_data(8, n=60, p=150, cells=12)
    rel = 10.0 ** np.arange(-3, 4)
    folds = S.kfold(len(X), 5, seed=3)
    out = R.ridge_fold_scores(gram(X), Y, rel, folds)
    for f, (tr, te) in enumerate(folds):
        model = RidgeCV(alphas=rel * train_scale(X, tr), alpha_per_target=True).fit(X[tr], Y[tr])
        np.testing.assert_allclose(out["alpha"][f], model.alpha_, rtol=1e-10)
        np.testing.assert_allclose(out["prediction"][te], model.predict(X[te]), atol=1e-8)
    assert len(np.unique(np.round(out["alpha"] / out["alpha"].min(), 6))) >= 3


def test_ridge_null_equals_loop(monkeypatch):
    X, Y = ridge_data(9, n=40, p=60, cells=5)
    K = gram(X)
    Y[:, 2] = 4.0  # a constant cell: NaN everywhere
    rel = [0.01, 0.3, 10.0]
    folds = S.kfold(40, 4, seed=1)
    perms = np.concatenate([np.arange(40)[None], I.permutations(40, 14, seed=5)])
    for fisher in (False, True):
        out = R.ridge_fold_scores(K, Y, rel, folds, perms, fisher=fisher)
        loop = np.stack(
            [R.ridge_fold_scores(K, Y[p], rel, folds, fisher=fisher)["score"] for p in perms]
        )
        np.testing.assert_allclose(out["null"], loop, rtol=0, atol=1e-8)
        np.testing.assert_allclose(out["null"][0], out["score"], rtol=0, atol=1e-12)
        np.testing.assert_array_equal(
            I.p_values(out["score"], out["null"]), I.p_values(out["score"], loop)
        )
    assert np.isnan(out["score"][2]) and np.isnan(out["null"][:, 2]).all()
    assert np.isfinite(np.delete(out["null"], 2, axis=1)).all()
    pooled = R.ridge_pooled_scores(K, Y, rel, folds, perms)
    loop = np.stack([R.ridge_pooled_scores(K, Y[p], rel, folds)["score"] for p in perms])
    np.testing.assert_allclose(pooled["null"], loop, rtol=0, atol=1e-8)
    # blocks of cells and permutations give the same numbers
    monkeypatch.setattr(devices, "MAX_BLOCK_BYTES", 8 * (12 * 40 + 3) * 2)
    blocked = R.ridge_fold_scores(K, Y, rel, folds, perms, fisher=True)
    for k in ("null", "score", "fold_r", "prediction", "alpha"):
        np.testing.assert_allclose(blocked[k], out[k], rtol=0, atol=1e-12)
    none = R.ridge_fold_scores(K, Y, rel, folds, I.permutations(40, 0))
    assert none["null"].shape == (0, 5) and np.isnan(I.p_values(none["score"], none["null"])).all()


def test_ridge_planted_signal():
    g = rng(10)
    n, P = 118, 99
    X = g.normal(size=(n, 40))
    Y = X @ g.normal(size=(40, 8)) + 3.0 * g.normal(size=(n, 8))
    out = R.ridge_fold_scores(gram(X), Y, R.RELATIVE_ALPHAS, S.kfold(n, 5, 0), I.permutations(n, P))
    assert (out["score"] > 0.5).all()
    np.testing.assert_allclose(I.p_values(out["score"], out["null"]), 1 / (1 + P))
    assert np.abs(out["null"]).max() < 0.5


def test_ridge_pooled_is_biased_fold_mean_is_not():
    """On noise, predictions pooled over folds correlate negatively with the responses (each
    fold's prediction leans on its training mean); the per-fold r averages to 0."""
    n, folds = 118, S.kfold(118, 5, 0)
    fold_mean, pooled = [], []
    for seed in range(3):
        g = rng(100 + seed)
        K, Y = gram(g.normal(size=(n, 300))), g.normal(size=(n, 400))
        fold_mean.append(R.ridge_fold_scores(K, Y, R.RELATIVE_ALPHAS, folds)["score"])
        pooled.append(R.ridge_pooled_scores(K, Y, R.RELATIVE_ALPHAS, folds)["score"])
    assert abs(np.mean(fold_mean)) < 0.02
    assert np.mean(pooled) < -0.05


def test_ridge_null_calibration():
    """No signal: p-values uniform (permutation p <= 0.05 has probability exactly 0.05 with
    99 permutations), scores at chance, no BH discoveries."""
    n, P, folds = 118, 99, S.kfold(118, 5, 0)
    rel = 10.0 ** np.arange(-2, 3)
    p, score = [], []
    for seed in range(4):
        g = rng(200 + seed)
        K, Y = gram(g.normal(size=(n, 300))), g.normal(size=(n, 400))
        out = R.ridge_fold_scores(K, Y, rel, folds, I.permutations(n, P, seed))
        p.append(I.p_values(out["score"], out["null"]))
        score.append(out["score"])
    p = np.concatenate(p)
    assert abs(np.mean(score)) < 0.02
    assert abs(np.mean(p <= 0.05) - 0.05) < 0.02
    assert abs(np.mean(p <= 0.5) - 0.5) < 0.05
    assert np.mean(I.bh_q(p) <= 0.05) <= 0.01


def test_ridge_scale_invariance():
    X, Y = ridge_data(11, n=60, p=90, cells=7)
    folds = S.kfold(60, 5, seed=4)
    perms = I.permutations(60, 9, seed=6)
    rel = 10.0 ** np.arange(-3, 4)
    ref = R.ridge_fold_scores(gram(X), Y, rel, folds, perms)
    assert len(np.unique(np.round(ref["alpha"] / ref["alpha"].min(), 6))) >= 2
    for c in (1e-9, 1e6):
        out = R.ridge_fold_scores(gram(c * X), Y, rel, folds, perms)
        for k in ("score", "fold_r", "null", "prediction"):
            np.testing.assert_allclose(out[k], ref[k], rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(out["alpha"] / c**2, ref["alpha"], rtol=1e-6)


# ------------------------------------------------------------------ matching, groups, torch


def test_permuted_columns_give_the_matching_null():
    g = rng(12)
    n, cells, P = 30, 3, 4
    Y = g.normal(size=(n, cells))
    U = g.normal(size=(n, 40))
    folds = S.kfold(n, 5, seed=0)
    perms = I.permutations(n, P, seed=7)
    Yp = I.permuted_columns(Y, perms)
    assert Yp.shape == (n, P * cells)
    np.testing.assert_array_equal(Yp[:, 2 * cells + 1], Y[perms[2], 1])
    acc = S.MatchAccumulator(Yp, folds, dtype=np.float64)
    acc.update(U)
    res = acc.result()
    score, fold_r = crossval.fold_scores(res["prediction"], Yp, folds)
    null, null_folds = I.unstack_null(score, P, cells), I.unstack_null(fold_r, P, cells)
    units = I.unstack_null(res["best_unit"], P, cells)
    for k, p in enumerate(perms):
        one = S.MatchAccumulator(Y[p], folds, dtype=np.float64)
        one.update(U)
        r1 = one.result()
        s1, f1 = crossval.fold_scores(r1["prediction"], Y[p], folds)
        np.testing.assert_array_equal(units[:, k], r1["best_unit"])
        np.testing.assert_allclose(null[k], s1, atol=1e-12)
        np.testing.assert_allclose(null_folds[:, k], f1, atol=1e-12)


def test_group_null_median_equals_loop():
    g = rng(13)
    null = g.normal(size=(7, 12))
    null[:, 3] = np.nan
    null[2, :] = np.nan
    membership = g.uniform(size=(4, 12)) < 0.5
    membership[3] = False
    out = I.group_null_median(null, membership)
    assert out.shape == (7, 4)
    for k in range(7):
        for gi in range(3):
            v = null[k, membership[gi]]
            v = v[np.isfinite(v)]
            expected = np.median(v) if len(v) else np.nan
            np.testing.assert_allclose(out[k, gi], expected, rtol=1e-14)
    assert np.isnan(out[:, 3]).all() and np.isnan(out[2]).all()


@pytest.mark.skipif(not HAS_TORCH, reason="torch not installed")
@pytest.mark.parametrize("device", ["torch:cpu", "cuda"])
def test_torch_equals_numpy(device):
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    X, Y = ridge_data(14, n=40, p=50, cells=4)
    folds = S.kfold(40, 4, seed=0)
    perms = I.permutations(40, 6, seed=8)
    rel = [0.01, 1.0, 100.0]
    for fn, kw in ((R.ridge_fold_scores, {"fisher": True}), (R.ridge_pooled_scores, {})):
        a = fn(gram(X), Y, rel, folds, perms, **kw)
        b = fn(gram(X), Y, rel, folds, perms, device=device, **kw)
        assert a.keys() == b.keys()
        for k in a:
            np.testing.assert_allclose(b[k], a[k], rtol=1e-10, atol=1e-12)
    g = rng(15)
    vecs = rdm_vectors(g, 3, 12, 6)
    p12 = I.permutations(12, 9, seed=9)
    for method in ("spearman", "pearson"):
        np.testing.assert_allclose(
            I.rsa_null(vecs[:2], vecs[2:], p12, method, device=device),
            I.rsa_null(vecs[:2], vecs[2:], p12, method),
            atol=1e-12,
        )
    K = np.stack([gram(g.normal(size=(12, 5))) for _ in range(3)])
    np.testing.assert_allclose(
        I.cka_null(K[:1], K[1:], p12, device=device), I.cka_null(K[:1], K[1:], p12), atol=1e-12
    )
