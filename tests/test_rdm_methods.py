"""RDM distances and comparators against rsatoolbox; their permutation nulls against loops,
calibrated on data without signal and powered on planted signal; RSR on planted truth and
on null data."""

from __future__ import annotations

import numpy as np
import pytest

from mice2machines.compare import rdm_methods as M
from mice2machines.compare import rsr
from mice2machines.compare.bootstrap import bootstrap_representation, resampled
from mice2machines.compare.gram import Representations
from mice2machines.compare.inference import bh_q, p_values, permutations
from mice2machines.compare.registry import get_metric
from mice2machines.compare.ridge import kfold
from mice2machines.compare.rsa import rdm, upper_tri

NEW = ("rho_a", "cosine", "kendall_tau_a", "cosine_cov", "corr_cov")


def rng(seed=0):
    return np.random.default_rng(seed)


def reps(arrays):
    return Representations.from_arrays(arrays, dtype=np.float64, remove_mean_pattern=True)


def neural_reps(responses_list, k: int = 2):
    """A neural side from (cells, stimuli, repeats) responses: trial means and crossnobis."""
    r = reps([np.nanmean(R, -1).T for R in responses_list])
    r.named = {"crossnobis": np.stack([M.rdm_crossnobis(R, k) for R in responses_list])}
    return r


DISTANCES = ("correlation", "euclidean", "crossnobis")


def metric_name(distance: str, comparator: str) -> str:
    return "rsa_" + ("" if distance == "correlation" else f"{distance}_") + comparator


# ------------------------------------------------------------------ against rsatoolbox


@pytest.fixture(scope="module")
def toolbox():
    pytest.importorskip("rsatoolbox")
    from rsatoolbox.data import Dataset
    from rsatoolbox.rdm import RDMs, calc_rdm, compare

    return Dataset, RDMs, calc_rdm, compare


def test_distances_equal_rsatoolbox(toolbox):
    Dataset, _, calc_rdm, _ = toolbox
    g = rng(1)
    X = g.normal(size=(17, 23))
    ref = calc_rdm(Dataset(X), method="euclidean").get_vectors()[0]
    np.testing.assert_allclose(upper_tri(M.rdm_euclidean(X)), ref, rtol=0, atol=1e-12)
    Xc = X - X.mean(0)  # the model side: column-centred Gram, no 1 / features
    D = M.euclidean_from_gram(Xc @ Xc.T)
    np.testing.assert_allclose(upper_tri(D) / X.shape[1], ref, rtol=0, atol=1e-12)
    r = reps([X])
    np.testing.assert_allclose(
        M.DISTANCES["euclidean"].from_reps(r)[0] / X.shape[1], M.rdm_euclidean(X), atol=1e-12
    )
    ref = calc_rdm(Dataset(X), method="correlation").get_vectors()[0]
    np.testing.assert_allclose(upper_tri(rdm(X)), ref, rtol=0, atol=1e-12)


@pytest.mark.parametrize("k", [2, 3])
def test_crossnobis_equals_rsatoolbox(toolbox, k):
    """Partitions of the repeats as rsatoolbox's cv_descriptor; identity, diagonal and full
    noise precision; a missing repeat is a missing observation."""
    Dataset, _, calc_rdm, _ = toolbox
    g = rng(2)
    cells, n, reps_ = 9, 12, 6
    R = g.normal(size=(cells, n, reps_)) + g.normal(size=(cells, n, 1))
    R[0, 3, 4] = np.nan
    part = M.partitions(reps_, k)
    meas = R.transpose(1, 2, 0).reshape(-1, cells)
    stim, cv = np.repeat(np.arange(n), reps_), np.tile(part, n)
    keep = np.isfinite(meas).all(1)
    R_ = R.copy()  # rsatoolbox drops the whole observation: so do we, for this check
    R_[:, 3, 4] = np.nan
    ds = Dataset(meas[keep], obs_descriptors={"stim": stim[keep], "cv": cv[keep]})
    A = g.normal(size=(cells, cells))
    full = np.linalg.inv(A @ A.T / cells + np.eye(cells))
    diag = g.uniform(0.5, 2.0, cells)
    for ours, noise in ((None, None), (diag, np.diag(diag)), (full, full)):
        ref = calc_rdm(ds, "crossnobis", "stim", noise=noise, cv_descriptor="cv")
        got = upper_tri(M.rdm_crossnobis(R_, k, ours))
        np.testing.assert_allclose(got, ref.get_vectors()[0], rtol=0, atol=1e-10)


def test_crossnobis_is_unbiased_and_needs_partitions():
    """Pure noise: the cross-validated distances average to 0 (the plain Euclidean of the
    trial means does not); too few repeats and missing partitions are refused / NaN."""
    g = rng(3)
    R = g.normal(size=(400, 10, 8))
    cn = upper_tri(M.rdm_crossnobis(R, 4))
    eu = upper_tri(M.rdm_euclidean(np.nanmean(R, -1).T))
    assert abs(eu.mean() - 2 / 8) < 0.01  # 2 sigma^2 / repeats per cell
    assert abs(cn.mean()) < 0.01 and (cn < 0).any()
    with pytest.raises(ValueError, match="partitions"):
        M.rdm_crossnobis(R, 9)
    R[:, 2, ::2] = np.nan  # stimulus 2 has no repeat in partition 0
    D = M.rdm_crossnobis(R, 2)
    assert np.isnan(D[2, [0, 1, 3]]).all() and np.isfinite(D[0, 1])


def test_comparators_equal_rsatoolbox(toolbox):
    """Every registered comparator equals rsatoolbox's compare(method=...) on random RDMs
    (with tied values), for both distances the RSA metrics use."""
    _, RDMs, calc_rdm, compare = toolbox
    g = rng(4)
    X = [g.normal(size=(18, 12)) for _ in range(3)]
    Y = [g.normal(size=(18, 30)) for _ in range(4)]
    worst = {}
    for dist in ("correlation", "euclidean"):
        a = upper_tri(M.DISTANCES[dist].from_reps(reps(X)))
        b = upper_tri(M.DISTANCES[dist].from_reps(reps(Y)))
        a = np.round(a / a.std(), 1)  # ties
        for c in M.COMPARATORS.values():
            ref = compare(RDMs(a), RDMs(b), method=c.rsatoolbox)
            worst[dist, c.name] = np.abs(c.compare(a, b) - ref).max()
    assert max(worst.values()) < 1e-9, worst
    # -D/2 of squared Euclidean distances, double-centred, is the centred Gram: whitened
    # cosine of Euclidean RDMs is biased linear CKA
    same = get_metric("rsa_euclidean_cosine_cov").score(reps(X), reps(Y))
    np.testing.assert_allclose(same, get_metric("cka_biased").score(reps(X), reps(Y)), atol=1e-12)


# ------------------------------------------------------------------ nulls and bootstrap


@pytest.mark.parametrize("comparator", sorted(M.COMPARATORS))
def test_null_equals_rescored_permutations(comparator):
    """Each comparator's null rule is the metric rescored on the permuted neural images."""
    g = rng(5)
    n = 13
    neural = neural_reps([g.normal(size=(6, n, 4)) for _ in range(2)])
    model = reps([g.normal(size=(n, 9)) for _ in range(3)])
    perms = permutations(n, 11, seed=2)
    for dist in DISTANCES:
        m = get_metric(metric_name(dist, comparator))
        expected = np.stack([m.score(resampled(neural, p), model) for p in perms])
        np.testing.assert_allclose(m.null(neural, model, perms, "cpu"), expected, atol=1e-10)


def test_bootstrap_rules():
    """The kept-pairs loop equals the vectorised rule where both exist; every new metric's
    bootstrap has the right shape and is finite; whitened ones rescore the resamples."""
    g = rng(6)
    n = 15
    neural = neural_reps([g.normal(size=(6, n, 4)) for _ in range(2)])
    model = reps([g.normal(size=(n, 9)) for _ in range(3)])
    idx = g.integers(0, n, (7, n))
    loop = M._kept_pairs_bootstrap("spearman")(neural.rdms, model.rdms, idx, "cpu")
    fast = M.COMPARATORS["spearman"].bootstrap(neural.rdms, model.rdms, idx, "cpu")
    np.testing.assert_allclose(loop, fast, atol=1e-12)
    names = [metric_name(d, c) for d in DISTANCES for c in NEW]
    out = bootstrap_representation(neural, model, names, idx)
    for name in names:
        assert out[name].shape == (7, 2, 3) and np.isfinite(out[name]).all(), name
    m = get_metric("rsa_euclidean_cosine_cov")
    np.testing.assert_allclose(
        out[m.name][3], m.score(resampled(neural, idx[3]), resampled(model, idx[3])), atol=1e-12
    )


def test_nulls_calibrated_on_data_without_signal():
    """Neural and model data independent: p uniform for every new comparator and distance
    (p <= 0.05 is an exact 5 % test with 39 permutations), no BH discoveries."""
    n, P = 16, 39
    p = {}
    for seed in range(25):
        g = rng(100 + seed)
        neural = neural_reps([g.normal(size=(8, n, 4)) for _ in range(4)])
        model = reps([g.normal(size=(n, 10)) for _ in range(5)])
        perms = permutations(n, P, seed)
        for d in DISTANCES:
            for c in NEW:
                m = get_metric(metric_name(d, c))
                obs = m.score(neural, model)
                p.setdefault(m.name, []).append(p_values(obs, m.null(neural, model, perms, "cpu")))
    for name, values in p.items():
        v = np.concatenate([x.ravel() for x in values])
        assert abs(np.mean(v <= 0.05) - 0.05) < 0.035, (name, np.mean(v <= 0.05))
        assert abs(np.mean(v) - 0.5) < 0.06, (name, np.mean(v))
        assert np.mean(bh_q(v) <= 0.05) <= 0.02, name


def test_planted_layer_wins_and_is_significant():
    g = rng(7)
    n = 30
    layers = [g.normal(size=(n, 30)) for _ in range(4)]
    trials = layers[2][:, :20].T[:, :, None] + 1.0 * g.normal(size=(20, n, 4))
    neural = neural_reps([trials])
    model = reps(layers)
    perms = permutations(n, 99, 0)
    for d in DISTANCES:
        for c in NEW:
            m = get_metric(metric_name(d, c))
            obs = m.score(neural, model)
            p = p_values(obs, m.null(neural, model, perms, "cpu"))
            assert np.argmax(obs[0]) == 2 and p[0, 2] == 0.01, (m.name, obs, p)


def test_new_metrics_reach_the_config():
    from mice2machines.compare import settings
    from mice2machines.settings import ConfigError, schema

    enum = schema("compare")["properties"]["metrics"]["items"]["enum"]
    for d in DISTANCES:
        for c in M.COMPARATORS:
            assert metric_name(d, c) in enum
    assert "rsr" in enum
    default = settings({})["metrics"]
    assert "rsa_spearman" in default and "rsa_kendall_tau_a" not in default
    neural = reps([np.eye(5)])
    neural.named = {}  # a neural side prepared without repeats
    with pytest.raises(M.MissingRDMs, match="no crossnobis RDMs"):
        get_metric("rsa_crossnobis_pearson").score(neural, reps([np.eye(5)]))
    assert "rsr" not in default
    cfg = settings({"metrics": ["rsa_euclidean_corr_cov", "rsr"]})
    assert cfg["metrics"] == ["rsa_euclidean_corr_cov", "rsr"]
    with pytest.raises(ConfigError, match="rsa_mahalanobis"):
        settings({"metrics": ["rsa_mahalanobis"]})


# ------------------------------------------------------------------ RSR


def test_rsr_fit_equals_direct_nnls():
    """The QR shortcut gives scipy's NNLS of the centred training pairs (intercept free)."""
    from scipy.optimize import nnls

    g = rng(8)
    n = 30
    a = upper_tri(reps([g.normal(size=(n, 5))]).rdms)
    b = upper_tri(reps([g.normal(size=(n, 7)) for _ in range(4)]).rdms)
    a = a + 0.8 * b[1] + 0.3 * b[3]
    folds = kfold(n, 4, 1)
    fit = rsr.rsr_fit(a, b, folds)
    for f, (tr, te) in enumerate(rsr.pair_folds(n, folds)):
        X, y = b.T[tr], a[0][tr]
        w = nnls(X - X.mean(0), y - y.mean())[0]
        np.testing.assert_allclose(fit["weights"][f, 0], w, atol=1e-10)
        np.testing.assert_allclose(fit["fold_r"][f, 0], np.corrcoef(b.T[te] @ w, a[0][te])[0, 1])
        i, j = np.triu_indices(n, k=1)
        test_images = set(folds[f][1])
        assert all(i[k] not in test_images and j[k] not in test_images for k in tr)
        assert all(i[k] in test_images and j[k] in test_images for k in te)


def test_rsr_planted_layer_gets_the_weight_and_is_significant():
    g = rng(9)
    n = 60
    layers = [g.normal(size=(n, 40)) for _ in range(6)]
    model = reps(layers)
    neural = reps([layers[3][:, :30] + 1.5 * g.normal(size=(n, 30))])
    fit = rsr.rsr_fit(upper_tri(neural.rdms), upper_tri(model.rdms), kfold(n, 5, 0))
    assert np.argmax(fit["weights"].mean(0)[0]) == 3
    m = get_metric("rsr")
    score = m.score(neural, model)
    assert score.shape == (1, 6) and (score == score[0, 0]).all() and score[0, 0] > 0.2
    null = m.null(neural, model, permutations(n, 99, 0), "cpu")
    assert p_values(score, null)[0, 0] == 0.01 and abs(null.mean()) < 0.05
    boot = m.bootstrap(neural, model, g.integers(0, n, (20, n)), "cpu")
    assert boot.shape == (20, 1, 6) and np.nanmin(boot) > 0


def test_rsr_calibrated_on_null_data():
    """A model unrelated to the neural data: p uniform, score near chance."""
    n, P = 24, 39
    ps, scores = [], []
    m = get_metric("rsr")
    for seed in range(30):
        g = rng(300 + seed)
        neural = reps([g.normal(size=(n, 10)) for _ in range(3)])
        model = reps([g.normal(size=(n, 12)) for _ in range(4)])
        score = m.score(neural, model)[:, 0]
        null = m.null(neural, model, permutations(n, P, seed), "cpu")[:, :, 0]
        ps.append(p_values(score, null))
        scores.append(score)
    p = np.concatenate(ps)
    assert abs(np.mean(p <= 0.05) - 0.05) < 0.05, np.mean(p <= 0.05)
    assert abs(np.mean(p) - 0.5) < 0.08, np.mean(p)
    assert abs(np.mean(scores)) < 0.05, np.mean(scores)
