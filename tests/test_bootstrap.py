"""The vectorised bootstraps equal the plain per-resample loops they replace (numpy and torch)."""

from __future__ import annotations

import numpy as np
import pytest

from mice2machines import devices
from mice2machines.compare import bootstrap as B
from mice2machines.compare.cka import cka_from_grams
from mice2machines.compare.gram import Representations
from mice2machines.compare.rsa import RDM_COMPARATORS

DEVICES = [
    "cpu",
    pytest.param(
        "torch:cpu", marks=pytest.mark.skipif(not pytest.importorskip("torch"), reason="torch")
    ),
]


# ------------------------------------------------------------------ reference loops (as before)


def loop_representation(neural, model, metric, indices):
    """The former per-resample loop: RSA on the kept pairs, CKA of the resampled Grams."""
    out = np.empty((len(indices), len(neural.names), len(model.names)))
    for b, idx in enumerate(indices):
        if metric.startswith("rsa_"):
            ii, jj = B.resampled_pairs(idx)
            fn = RDM_COMPARATORS[metric.removeprefix("rsa_")]
            out[b] = fn(neural.rdms[:, ii, jj], model.rdms[:, ii, jj])
        else:
            rn, rm = B.resampled(neural, idx), B.resampled(model, idx)
            out[b] = cka_from_grams(rn.grams, rm.grams, unbiased=metric == "cka_unbiased")
    return out


def loop_cell_r(pred, obs, indices):
    """Pearson r of each cell over each resample's stimuli, directly."""
    out = np.empty((len(indices), len(pred)))
    for b, idx in enumerate(indices):
        p, o = pred[:, idx], obs[:, idx]
        p = p - p.mean(1, keepdims=True)
        o = o - o.mean(1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[b] = (p * o).sum(1) / np.sqrt((p * p).sum(1) * (o * o).sum(1))
    return out


def loop_fold_r(pred, obs, folds, indices, fisher):
    """Per resample and fold, r over the fold's held-out stimuli as drawn; mean over folds."""
    out = np.empty((len(indices), len(pred)))
    for b, idx in enumerate(indices):
        rs = []
        for _, te in folds:
            sel = idx[np.isin(idx, te)]
            if len(np.unique(sel)) >= 2:  # r of one stimulus is undefined
                rs.append(loop_cell_r(pred, obs, sel[None])[0])
            else:
                rs.append(np.full(len(pred), np.nan))
        rs = np.stack(rs)
        ok = np.isfinite(rs)
        with np.errstate(invalid="ignore", divide="ignore"):
            x = np.arctanh(np.clip(rs, -1, 1)) if fisher else rs
            mean = np.where(ok, x, 0.0).sum(0) / ok.sum(0)
        mean = np.tanh(mean) if fisher else mean
        out[b] = np.where(ok.any(0), mean, np.nan)
    return out


# ------------------------------------------------------------------ data


def reps(seed=0, n=14, G=3, L=4, ties=True):
    """Neural and model representations with exact ties in the RDMs (rounded), a constant
    neural stimulus (NaN dissimilarities) in one group."""
    g = np.random.default_rng(seed)
    X = [g.normal(size=(n, 5 + k)) for k in range(G)]
    Y = [g.normal(size=(n, 40)) for _ in range(L)]
    ra = Representations.from_arrays(X, dtype=np.float64)
    rb = Representations.from_arrays(Y, dtype=np.float64)
    if ties:  # coarse values: many ties within and across pairs
        ra = Representations(ra.names, ra.grams, np.round(ra.rdms, 1))
        rb = Representations(rb.names, rb.grams, np.round(rb.rdms * 4) / 4)
    return ra, rb


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("metric", ["rsa_spearman", "rsa_pearson", "cka_unbiased", "cka_biased"])
@pytest.mark.parametrize("ties", [True, False])
def test_representation_equals_loop(metric, device, ties, monkeypatch):
    ra, rb = reps(ties=ties)
    idx = B.bootstrap_indices(14, 23, seed=4)
    idx[0] = np.arange(14)  # the plain sample
    idx[1] = 3  # two stimuli only: one kept pair (its copies), constant ranks
    idx[1, ::2] = 7
    monkeypatch.setattr(devices, "MAX_BLOCK_BYTES", 40_000)  # several blocks
    got = B.bootstrap_representation(ra, rb, [metric], idx, device=device)[metric]
    want = loop_representation(ra, rb, metric, idx)
    assert got.shape == want.shape == (23, 3, 4)
    if metric.startswith("rsa_"):
        # the one kept pair's copies form a constant vector: no correlation (NaN); the loop
        # gives NaN or, for Pearson, the rounding noise of its mean
        assert np.isnan(got[1]).all()
        got, want = np.delete(got, 1, 0), np.delete(want, 1, 0)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-10, equal_nan=True)
    assert np.isfinite(want[1:]).all()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("metric", ["rsa_spearman", "rsa_pearson", "cka_unbiased", "cka_biased"])
def test_nan_stimulus_only_when_drawn(metric, device):
    """A stimulus with NaN dissimilarities (Gram entries) spoils only the resamples that
    draw it."""
    ra, rb = reps(seed=1)
    rdms, grams = ra.rdms.copy(), ra.grams.copy()
    rdms[0, 5, :] = rdms[0, :, 5] = np.nan
    grams[0, 5, :] = grams[0, :, 5] = np.nan
    ra = Representations(ra.names, grams, rdms)
    idx = B.bootstrap_indices(14, 40, seed=2)
    got = B.bootstrap_representation(ra, rb, [metric], idx, device=device)[metric]
    want = loop_representation(ra, rb, metric, idx)
    drawn = (idx == 5).any(1)
    assert drawn.any() and (~drawn).any()
    assert np.isnan(want[drawn, 0]).all() and np.isfinite(want[~drawn, 0]).all()
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-10, equal_nan=True)


@pytest.mark.parametrize("device", DEVICES)
def test_default_rule_and_shapes(device):
    ra, rb = reps()
    idx = B.bootstrap_indices(14, 5, seed=0)
    metrics = ["rsa_spearman", "cka_unbiased"]
    out = B.bootstrap_representation(ra, rb, metrics, idx, device=device)
    assert {k: v.shape for k, v in out.items()} == {m: (5, 3, 4) for m in metrics}
    empty = B.bootstrap_representation(ra, rb, metrics, idx[:0], device=device)
    assert all(v.shape == (0, 3, 4) for v in empty.values())


def test_resample_counts():
    idx = B.bootstrap_indices(9, 30, seed=1)
    want = np.stack([np.bincount(i, minlength=9) for i in idx])
    np.testing.assert_array_equal(B.resample_counts(idx, 9), want)


def _cells(seed=3, cells=7, n=30):
    g = np.random.default_rng(seed)
    pred = g.normal(size=(cells, n))
    obs = pred + g.normal(size=(cells, n))
    pred[2] = 1.0  # a constant prediction: NaN
    return pred, obs


@pytest.mark.parametrize("device", DEVICES)
def test_cell_r_equals_loop(device, monkeypatch):
    pred, obs = _cells()
    idx = B.bootstrap_indices(30, 50, seed=3)
    monkeypatch.setattr(devices, "MAX_BLOCK_BYTES", 2_000)
    got = B.bootstrap_cell_r(pred, obs, idx, device=device)
    want = loop_cell_r(pred, obs, idx)
    assert np.isnan(want[:, 2]).all()
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-10, equal_nan=True)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("fisher", [False, True])
def test_fold_r_equals_loop(device, fisher, monkeypatch):
    from mice2machines.compare.crossval import kfold

    pred, obs = _cells(n=60)
    folds = kfold(60, 5, seed=1)
    idx = B.bootstrap_indices(60, 60, seed=5)
    te = folds[1][1]
    idx[0, np.isin(idx[0], te)] = te[0]  # fold 1 of resample 0: one distinct stimulus
    monkeypatch.setattr(devices, "MAX_BLOCK_BYTES", 3_000)
    got = B.bootstrap_fold_r(pred, obs, folds, idx, fisher, device=device)
    want = loop_fold_r(pred, obs, folds, idx, fisher)
    if fisher:  # a fold of two distinct stimuli: r = +-1 up to rounding, its z ill-conditioned
        two = [[len(np.unique(i[np.isin(i, te)])) == 2 for _, te in folds] for i in idx]
        ok = ~np.any(two, axis=1)
        assert ok.mean() > 0.8
        got, want = got[ok], want[ok]
    assert np.isnan(want[:, 2]).all() and np.isfinite(np.delete(want, 2, 1)).all()
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-10, equal_nan=True)
