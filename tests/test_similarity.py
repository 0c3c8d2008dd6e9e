"""The similarity engine against reference implementations (rsatoolbox, scikit-learn, direct
float64 formulas) and planted structure."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from mice2machines import similarity as S
from mice2machines.compare.rsa import _rank as rank
from mice2machines.devices import blas_controller


def rng(seed=0):
    return np.random.default_rng(seed)


def hsic_song(K, L):
    """Unbiased HSIC, Song et al. 2012 eq. 5, written out in float64."""
    n = K.shape[0]
    K = K.astype(np.float64).copy()
    L = L.astype(np.float64).copy()
    np.fill_diagonal(K, 0)
    np.fill_diagonal(L, 0)
    one = np.ones(n)
    return (
        np.trace(K @ L)
        + (one @ K @ one) * (one @ L @ one) / ((n - 1) * (n - 2))
        - 2.0 / (n - 2) * (one @ K @ L @ one)
    ) / (n * (n - 3))


def cka_direct(X, Y, unbiased=True):
    K, L = X @ X.T, Y @ Y.T
    if unbiased:
        return hsic_song(K, L) / np.sqrt(hsic_song(K, K) * hsic_song(L, L))
    n = len(X)
    H = np.eye(n) - 1.0 / n
    hs = lambda a, b: np.trace(a @ H @ b @ H)  # noqa: E731
    return hs(K, L) / np.sqrt(hs(K, K) * hs(L, L))


# ------------------------------------------------------------------ RDM / RSA vs rsatoolbox


@pytest.fixture(scope="module")
def rsatoolbox_refs():
    pytest.importorskip("rsatoolbox")
    from rsatoolbox.data import Dataset
    from rsatoolbox.rdm import calc_rdm, compare

    g = rng(1)
    n = 30
    datasets = [g.normal(size=(n, p)) + g.normal(size=(1, p)) * 3 for p in (20, 57, 300)]
    datasets.append(np.maximum(g.normal(size=(n, 1000)), 0) + 5.0)  # ReLU-like, large mean
    rdms = calc_rdm([Dataset(x) for x in datasets], method="correlation")
    return datasets, rdms, compare


def test_rdm_equals_rsatoolbox(rsatoolbox_refs):
    datasets, ref, _ = rsatoolbox_refs
    for x, v in zip(datasets, ref.get_vectors(), strict=True):
        r = S.rdm(x)
        assert r.shape == (len(x), len(x))
        np.testing.assert_allclose(S.upper_tri(r), v, atol=1e-10)
        np.testing.assert_allclose(np.diag(r), 0)
        # streamed Gram statistics: any chunking, float64 exact, float32 within 1e-6
        for chunk, dtype, tol in ((7, np.float64, 1e-10), (64, np.float32, 1e-6)):
            _, rs = S.gram_stats(x, dtype=dtype, chunk=chunk)
            np.testing.assert_allclose(S.upper_tri(rs), v, atol=tol)


def test_rdm_without_mean_pattern_equals_rsatoolbox_on_centred_data(rsatoolbox_refs):
    from rsatoolbox.data import Dataset
    from rsatoolbox.rdm import calc_rdm

    datasets, _, _ = rsatoolbox_refs
    centred = [x - x.mean(0) for x in datasets]
    ref = calc_rdm([Dataset(x) for x in centred], method="correlation").get_vectors()
    for x, v in zip(datasets, ref, strict=True):
        np.testing.assert_allclose(S.upper_tri(S.rdm(x, remove_mean_pattern=True)), v, atol=1e-10)
        assert np.abs(S.upper_tri(S.rdm(x)) - v).max() > 1e-3  # the option changes the RDM
        for chunk, dtype, tol in ((7, np.float64, 1e-10), (64, np.float32, 1e-6)):
            _, rs = S.gram_stats(x, dtype=dtype, chunk=chunk, remove_mean_pattern=True)
            np.testing.assert_allclose(S.upper_tri(rs), v, atol=tol)
    reps = S.Representations.from_arrays(datasets, dtype=np.float64, remove_mean_pattern=True)
    np.testing.assert_allclose(S.upper_tri(reps.rdms), ref, atol=1e-10)


def test_rsa_equals_rsatoolbox(rsatoolbox_refs):
    datasets, ref, compare = rsatoolbox_refs
    mine = np.stack([S.rdm(x) for x in datasets])
    for method, theirs in (
        ("spearman", "spearman"),
        ("pearson", "corr"),
        ("rho-a", "rho-a"),
        ("cosine", "cosine"),
    ):
        expected = compare(ref, ref, method=theirs)
        got = S.rsa(mine, mine, method=method)
        np.testing.assert_allclose(got, expected, atol=1e-6)
        assert S.rsa(mine[0], mine[1], method=method) == pytest.approx(expected[0, 1], abs=1e-6)
    # vectors and squares mix
    assert S.rsa(S.upper_tri(mine[0]), mine[2]) == pytest.approx(S.rsa(mine[0], mine[2]))
    with pytest.raises(ValueError):
        S.rsa(mine[0], mine[1], method="nope")


@pytest.mark.parametrize("rows", [1, 5, 40])
def test_rank_equals_scipy_rankdata(rows):
    """Ranks behind Spearman RSA: scipy's average ranks, with ties, NaN rows, threaded blocks."""
    from scipy.stats import rankdata

    g = rng(rows)
    v = g.normal(size=(rows, 300))
    v[0, :20] = v[0, 20]  # a run of ties
    if rows > 1:
        v[1, :100] = np.round(v[1, :100], 1)  # many small tie groups
        v[-1, 7] = np.nan
    got = rank(v)
    np.testing.assert_array_equal(got, rankdata(v, axis=-1))
    np.testing.assert_array_equal(rank(v[0]), rankdata(v[0]))
    stack = v.reshape(rows, 2, 150) if rows > 1 else v.reshape(1, 2, 150)
    np.testing.assert_array_equal(rank(stack), rankdata(stack, axis=-1))


def test_rsa_table_equals_rsa_per_method():
    g = rng(4)
    a = np.stack([S.rdm(g.normal(size=(15, 30))) for _ in range(3)])
    b = np.stack([S.rdm(g.normal(size=(15, 8))) for _ in range(20)])
    b[5, 0, 1] = b[5, 1, 0] = np.nan
    table = S.rsa_table(a, b, ("spearman", "pearson", "rho-a"))
    for method, got in table.items():
        assert got.shape == (3, 20)
        np.testing.assert_array_equal(got, S.rsa(a, b, method=method))
    assert S.rsa_table(a[0], b[:1])["spearman"].shape == (1, 1)


def test_rsa_nan_pairs_dropped_per_comparison():
    g = rng(2)
    a, b, c = (S.rdm(g.normal(size=(12, 40))) for _ in range(3))
    c_nan = c.copy()
    c_nan[0, 1] = c_nan[1, 0] = np.nan
    out = S.rsa(np.stack([a, c_nan]), np.stack([b]))
    assert out[0, 0] == pytest.approx(S.rsa(a, b))  # untouched by c's NaN
    keep = np.ones(66, bool)
    keep[0] = False
    assert out[1, 0] == pytest.approx(S.rsa(S.upper_tri(c)[keep], S.upper_tri(b)[keep]))


def test_degenerate_representation_gives_nan():
    g = rng(13)
    X = g.normal(size=(10, 30))
    X[3:] = 1.0  # 7 constant stimulus rows
    _, r = S.gram_stats(X, dtype=np.float64)
    assert np.isnan(r[3:, :]).all() and np.isfinite(r[:3, :3]).all()
    _, r32 = S.gram_stats(X * 1e-3 + 5.0, chunk=7)  # float32, offset: rounding is not variance
    assert np.isnan(r32[3:, :]).all() and np.isfinite(r32[:3, :3]).all()
    np.testing.assert_allclose(r[:3, :3], S.rdm(X)[:3, :3], atol=1e-12)
    assert np.isnan(S.rsa(r, S.rdm(g.normal(size=(10, 5)))))  # 3 of 45 pairs left


def test_square_roundtrip():
    r = S.rdm(rng(3).normal(size=(9, 5)))
    np.testing.assert_allclose(S.square(S.upper_tri(r)), r, atol=1e-12)


# ------------------------------------------------------------------ CKA


def test_cka_unbiased_equals_direct_float64():
    g = rng(4)
    for n, p, q in ((20, 5, 300), (50, 200, 40)):
        X = g.normal(size=(n, p))
        Y = X[:, :3] @ g.normal(size=(3, q)) + g.normal(size=(n, q))
        assert S.cka(X, Y) == pytest.approx(cka_direct(X, Y), rel=1e-9)
        assert S.cka(X, Y, unbiased=False) == pytest.approx(cka_direct(X, Y, False), rel=1e-9)
        K, L = X @ X.T, Y @ Y.T
        assert S.hsic(K, L) == pytest.approx(hsic_song(K, L), rel=1e-9)
    # invariances: isotropic scaling, orthogonal rotation, feature offsets
    Q, _ = np.linalg.qr(g.normal(size=(p, p)))
    assert S.cka(3.0 * X @ Q + 7.0, Y) == pytest.approx(S.cka(X, Y), rel=1e-9)
    assert S.cka(X, X) == pytest.approx(1.0)


def test_cka_batched_and_streamed_grams():
    g = rng(5)
    Xs = [g.normal(size=(25, p)) for p in (10, 500, 33)]
    reps = S.Representations.from_arrays(Xs, dtype=np.float32, chunk=64)
    table = S.cka_from_grams(reps.grams, reps.grams)
    for i, x in enumerate(Xs):
        for j, y in enumerate(Xs):
            assert table[i, j] == pytest.approx(cka_direct(x - x.mean(0), y - y.mean(0)), abs=1e-6)


def test_threaded_gram_equals_one_thread(monkeypatch):
    """CPU blocks split among threads give the single-thread Gram and RDM (float64 to 1e-12),
    for uneven chunks; the same thread count gives the same bits; BLAS threads come back."""
    monkeypatch.setattr(S.GramAccumulator, "block", 64)  # many blocks per chunk
    monkeypatch.setattr(S.GramAccumulator, "min_block", 8)
    g = rng(12)
    X = g.normal(size=(31, 2000)) + 4.0 * g.normal(size=(1, 2000))
    widths = [1, 9, 100, 63, 1000, 7, 820]  # sums to 2000
    edges = np.cumsum([0, *widths])

    def run(workers, dtype=np.float64):
        acc = S.GramAccumulator(len(X), dtype=dtype, workers=workers)
        for lo, hi in zip(edges[:-1], edges[1:], strict=True):
            acc.update(X[:, lo:hi])
        return acc.gram(), acc.rdm()

    blas = blas_controller()
    before = [lib.num_threads for lib in blas.lib_controllers] if blas else None
    K1, R1 = run(1)
    np.testing.assert_allclose(R1, S.rdm(X), atol=1e-12)
    for workers in (2, 3):
        K, R = run(workers)
        np.testing.assert_allclose(K, K1, rtol=1e-12, atol=1e-12 * np.abs(K1).max())
        np.testing.assert_allclose(R, R1, atol=1e-12)
        K2, R2 = run(workers)
        np.testing.assert_array_equal(K2, K)  # deterministic
        np.testing.assert_array_equal(R2, R)
    _, R32 = run(2, np.float32)
    np.testing.assert_allclose(R32, R1, atol=1e-6)
    if blas:
        assert [lib.num_threads for lib in blas.lib_controllers] == before


# ------------------------------------------------------------------ ridge vs scikit-learn


def test_ridge_equals_sklearn():
    from sklearn.linear_model import Ridge, RidgeCV

    g = rng(6)
    n, p, c = 60, 300, 8
    X = g.normal(size=(n, p)) + 2.0
    Y = X[:, :10] @ g.normal(size=(10, c)) + 3.0 * g.normal(size=(n, c)) + 1.0
    alphas = 10.0 ** np.arange(-2, 6)
    folds = S.kfold(n, 5, seed=1)
    Xc = X - X.mean(0)
    pred, chosen = S.ridge_cv(Xc @ Xc.T, Y, alphas, folds)
    expected = np.zeros_like(pred)
    for f, (tr, te) in enumerate(folds):
        model = RidgeCV(alphas=alphas, alpha_per_target=True).fit(X[tr], Y[tr])
        np.testing.assert_array_equal(alphas[chosen[f]], model.alpha_)
        expected[te] = model.predict(X[te])
        # one alpha, plain Ridge
        one = Ridge(alpha=alphas[3]).fit(X[tr], Y[tr]).predict(X[te])
        p1, _ = S.ridge_cv(Xc @ Xc.T, Y, alphas[3:4], [(tr, te)])
        np.testing.assert_allclose(p1[te], one, rtol=1e-7, atol=1e-8)
    np.testing.assert_allclose(pred, expected, rtol=1e-7, atol=1e-8)
    r = S.ridge_predictivity(X, Y, alphas, n_folds=5, seed=1)
    np.testing.assert_allclose(r, S.pearson_rows(pred.T, Y.T))


def test_kfold_partitions():
    folds = S.kfold(23, 4, seed=0)
    tests = np.concatenate([te for _, te in folds])
    assert sorted(tests) == list(range(23))
    for tr, te in folds:
        assert not set(tr) & set(te)


# ------------------------------------------------------------------ one-to-one matching


def test_match_units_finds_planted_units_any_chunking():
    g = rng(7)
    n, units = 80, 3000
    U = g.normal(size=(n, units)).astype(np.float32)
    U[:, 5] = 0.0  # a dead unit must never win
    planted = np.array([3, 1500, 2999, 42])
    Y = U[:, planted] * 2.0 + 1.0 + 0.3 * g.normal(size=(n, len(planted)))
    a = S.match_units(Y, U, n_folds=4, chunk=256)
    b = S.match_units(Y, U, n_folds=4, chunk=4096)
    assert (a["best_unit"] == planted[None]).all()
    np.testing.assert_allclose(a["train_r"], b["train_r"], rtol=1e-5)
    np.testing.assert_allclose(a["prediction"], b["prediction"], rtol=1e-4, atol=1e-4)
    assert (a["r"] > 0.9).all()
    # train r equals numpy's correlation on the training images
    tr, _ = S.kfold(n, 4, 0)[0]
    ref = [np.corrcoef(Y[tr, i], U[tr, planted[i]])[0, 1] for i in range(len(planted))]
    np.testing.assert_allclose(a["train_r"][0], ref, rtol=1e-5)


def test_match_cpu_unit_blocks_equal_one_product(monkeypatch):
    """numpy's products cut into blocks of a few units (cache-sized in use) give the same
    best units, r and predictions as one product per chunk; tied units: the first wins."""
    from mice2machines.compare.matching import MatchAccumulator

    g = rng(11)
    n, units = 60, 700
    U = g.normal(size=(n, units)).astype(np.float32)
    U[:, 400] = U[:, 13]  # a tie across blocks: unit 13 must win
    Y = U[:, [13, 650, 7]] + 0.5 * g.normal(size=(n, 3))
    Y = np.concatenate([Y, g.normal(size=(n, 20))], axis=1)
    whole = S.match_units(Y, U, n_folds=5, chunk=512)
    monkeypatch.setattr(MatchAccumulator, "cpu_block_bytes", 4 * Y.shape[1] * 9)
    blocks = S.match_units(Y, U, n_folds=5, chunk=512)
    np.testing.assert_array_equal(blocks["best_unit"], whole["best_unit"])
    assert (whole["best_unit"][:, 0] == 13).all()
    np.testing.assert_array_equal(blocks["train_r"], whole["train_r"])
    np.testing.assert_array_equal(blocks["prediction"], whole["prediction"])


def test_torch_paths_equal_numpy():
    """The torch code (CUDA when present, else torch on the CPU) gives the numpy results."""
    pytest.importorskip("torch")
    dev = S.resolve_device("auto")
    dev = "torch:cpu" if dev == "cpu" else dev
    g = rng(8)
    X = g.normal(size=(40, 5000)).astype(np.float32)
    Y = X[:, [10, 20]] + 0.2 * g.normal(size=(40, 2))
    k_cpu, r_cpu = S.gram_stats(X, device="cpu", chunk=1000)
    k_gpu, r_gpu = S.gram_stats(X, device=dev, chunk=1000)
    np.testing.assert_allclose(r_gpu, r_cpu, atol=1e-5)
    np.testing.assert_allclose(k_gpu, k_cpu, rtol=1e-4, atol=1e-2)
    a = S.match_units(Y, X, device="cpu", chunk=1000)
    b = S.match_units(Y, X, device=dev, chunk=1000)
    np.testing.assert_array_equal(a["best_unit"], b["best_unit"])
    np.testing.assert_allclose(a["r"], b["r"], atol=1e-5)


def test_torch_matching_batched_folds_equal_numpy(monkeypatch):
    """The torch path batches all folds in one product: folds of unequal training size, given
    out of size order, units cut into blocks (small max_product), a constant and an offset
    unit give the numpy engine's units and correlations."""
    torch = pytest.importorskip("torch")
    dev = "cuda" if torch.cuda.is_available() else "torch:cpu"
    g = rng(11)
    n = 43  # 5 folds of 9, 9, 9, 8, 8 test stimuli
    U = g.normal(size=(n, 2000)).astype(np.float32)
    U[:, 7] = 0.0  # constant: never wins
    U[:, 100:300] += 50.0  # a large mean must not cost precision
    planted = np.array([3, 150, 1999, 42, 777])
    Y = U[:, planted] * 0.5 + 0.4 * g.normal(size=(n, len(planted)))
    Y[:, 1] = 1.0  # a constant neuron
    folds = S.kfold(n, 5, seed=3)[::-1]
    out = {}
    for name, device, max_product in [
        ("np", "cpu", None),
        ("one", dev, 1 << 28),
        ("cut", dev, 999),
    ]:
        if max_product is not None:
            monkeypatch.setattr(S.MatchAccumulator, "max_product", max_product)
        acc = S.MatchAccumulator(Y, folds, device=device)
        for lo in range(0, U.shape[1], 600):
            acc.update(U[:, lo : lo + 600])
        out[name] = acc.result()
    for name in ("one", "cut"):
        np.testing.assert_array_equal(out[name]["best_unit"], out["np"]["best_unit"])
        np.testing.assert_allclose(out[name]["train_r"], out["np"]["train_r"], atol=1e-6)
        np.testing.assert_allclose(out[name]["prediction"], out["np"]["prediction"], atol=1e-5)
    keep = np.array([0, 2, 3, 4])
    assert (out["cut"]["best_unit"][:, keep] == planted[keep]).all()
    assert (out["cut"]["best_unit"] != 7).all()


def test_nonzero_constant_units_never_win_on_any_device():
    """The rounded float32 mean of a nonzero constant leaves a residual whose correlation is
    ~0: it must not beat anticorrelated units (numpy and torch give the same unit)."""
    g = rng(3)
    n = 60
    y = g.normal(size=(n, 1))
    U = np.concatenate([-y - 0.5 * g.normal(size=(n, 3)), np.full((n, 4), 0.1)], axis=1)
    U = U.astype(np.float32)
    U[:, 5] = 1e4 / 3
    a = S.match_units(y, U, n_folds=3, device="cpu")
    assert (a["best_unit"] < 3).all() and (a["train_r"] < -0.5).all()
    if importlib.util.find_spec("torch") is not None:
        b = S.match_units(y, U, n_folds=3, device="torch:cpu")
        np.testing.assert_array_equal(a["best_unit"], b["best_unit"])


_FUSED_CHECK = """
import numpy as np, torch
from mice2machines import similarity as S
from mice2machines.compare import matchkernel as K
g = torch.Generator().manual_seed(0)
for folds, cells, units, k in [(3, 70, 300, 25), (2, 9, 700, 40)]:
    A = torch.randn(folds, cells, k + 1, generator=g)
    Z = torch.randn(folds, k + 3, units, generator=g)[:, :k]
    Z[:, :, 290] = Z[:, :, 5]  # a tie across tiles: the lower unit wins
    scale = torch.rand(folds, units, generator=g) + 0.5
    scale[:, 290] = scale[:, 5]
    pen = torch.where(torch.rand(folds, units, generator=g) < 0.1, -1e30, 0.0)
    pen[:, 5] = pen[:, 290] = 0.0
    r, j = K.rowmax(A, Z[:, :, 1:], scale[:, 1:], pen[:, 1:])
    r0, j0 = K.rowmax_reference(A, Z[:, :, 1:], scale[:, 1:], pen[:, 1:])
    assert torch.equal(j, j0), (j, j0)
    assert torch.allclose(r, r0, rtol=1e-5, atol=1e-5)
rng = np.random.default_rng(12)
U = rng.normal(size=(43, 900)).astype(np.float32)
U[:, 7] = 0.0
Y = U[:, [3, 400, 899]] + 0.4 * rng.normal(size=(43, 3))
folds = S.kfold(43, 5, seed=3)[::-1]
out = []
for fused in (True, False):
    S.MatchAccumulator.fused = fused
    acc = S.MatchAccumulator(Y, folds, device="torch:cpu")
    assert acc._use_kernel(torch.zeros(1, 1)) == fused
    for lo in range(0, 900, 500):
        acc.update(U[:, lo : lo + 500])
    out.append(acc.result())
np.testing.assert_array_equal(out[0]["best_unit"], out[1]["best_unit"])
np.testing.assert_allclose(out[0]["train_r"], out[1]["train_r"], atol=1e-6)
print("ok")
"""


def test_fused_match_kernel_equals_torch_in_triton_interpreter():
    """The Triton kernel (run by Triton's interpreter on the CPU, in a fresh process) gives
    its plain-torch reference's units and maxima, and the matching engine's results."""
    pytest.importorskip("torch")
    pytest.importorskip("triton")
    import os
    import subprocess
    import sys
    from pathlib import Path

    src = str(Path(S.__file__).resolve().parents[1])
    env = {**os.environ, "TRITON_INTERPRET": "1", "CUDA_VISIBLE_DEVICES": ""}
    env["PYTHONPATH"] = os.pathsep.join([src, env.get("PYTHONPATH", "")])
    run = subprocess.run(
        [sys.executable, "-c", _FUSED_CHECK], env=env, capture_output=True, text=True, timeout=900
    )
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr[-3000:]


def test_fused_match_kernel_failure_falls_back_to_torch(monkeypatch):
    """A kernel that cannot run (say, an old Triton) warns and leaves plain torch's results."""
    pytest.importorskip("torch")
    matchkernel = pytest.importorskip("mice2machines.compare.matchkernel")

    def broken(*args, **kwargs):
        raise RuntimeError("no kernel here")

    monkeypatch.setattr(matchkernel, "rowmax", broken)
    monkeypatch.setattr(S.MatchAccumulator, "_use_kernel", lambda self, U: self.fused)
    g = rng(13)
    U = g.normal(size=(30, 700)).astype(np.float32)
    Y = U[:, [5, 600]] + 0.3 * g.normal(size=(30, 2))
    folds = S.kfold(30, 4, seed=0)
    ref = S.MatchAccumulator(Y, folds, device="cpu")
    acc = S.MatchAccumulator(Y, folds, device="torch:cpu")
    with pytest.warns(UserWarning, match="fused matching kernel failed"):
        acc.update(U[:, :400])
    assert not acc.fused and S.MatchAccumulator.fused
    acc.update(U[:, 400:])
    ref.update(U[:, :400])
    ref.update(U[:, 400:])
    np.testing.assert_array_equal(acc.result()["best_unit"], ref.result()["best_unit"])
    assert (acc.result()["best_unit"] == [5, 600]).all()


# ------------------------------------------------------------------ ceilings and bootstrap


def test_spearman_brown_and_ceilings():
    assert S.spearman_brown(0.5) == pytest.approx(2 / 3)
    g = rng(9)
    signal = g.normal(size=(40, 50))  # cells x stimuli
    quiet = signal[:, :, None] + 0.1 * g.normal(size=(40, 50, 16))
    noisy = signal[:, :, None] + 3.0 * g.normal(size=(40, 50, 16))
    noisy[:, :, 0] = np.nan  # missing repeats are ignored
    groups = {"all": np.arange(40), "half": np.arange(20)}
    cq = S.group_ceilings(quiet, groups, n_splits=3)
    cn = S.group_ceilings(noisy, groups, n_splits=3)
    for m in (
        "rsa_spearman",
        "rsa_pearson",
        "cka_unbiased",
        "cka_biased",
        "rsa_crossnobis_pearson",
    ):
        assert cq[m].shape == (2,)
        assert (cq[m] > 0.95).all() and (cn[m] < cq[m]).all()
    rel = S.cell_reliability(quiet, n_splits=3)
    assert rel.shape == (40,) and (rel > 0.95).all()


def test_bootstrap_cell_r_equals_direct():
    g = rng(10)
    pred, obs = g.normal(size=(6, 30)), g.normal(size=(6, 30))
    obs += pred
    idx = S.bootstrap_indices(30, 20, seed=3)
    r = S.bootstrap_cell_r(pred, obs, idx)
    for b, ix in enumerate(idx):
        np.testing.assert_allclose(r[b], S.pearson_rows(pred[:, ix], obs[:, ix]), atol=1e-10)
    lo, hi = S.percentile_ci(r)
    assert (lo <= hi).all()
    lo2, hi2 = S.percentile_ci(r, estimate=np.zeros(6))
    np.testing.assert_allclose(hi2 - lo2, hi - lo)
    assert ((lo2 <= 0) & (hi2 >= 0)).all()


def test_bootstrap_representation_equals_direct():
    g = rng(11)
    A = [g.normal(size=(15, 30)) for _ in range(2)]
    B = [g.normal(size=(15, 200)) for _ in range(3)]
    ra = S.Representations.from_arrays(A, dtype=np.float64)
    rb = S.Representations.from_arrays(B, dtype=np.float64)
    idx = S.bootstrap_indices(15, 4, seed=0)
    out = S.bootstrap_representation(ra, rb, ["rsa_spearman", "cka_unbiased"], idx)
    for b, ix in enumerate(idx):
        i, j = np.triu_indices(15, 1)
        keep = ix[i] != ix[j]
        # rounding restores the exact ties of repeated stimulus pairs lost to rounding error
        va = [np.round(S.rdm(x[ix])[i[keep], j[keep]], 12) for x in A]
        vb = [np.round(S.rdm(y[ix])[i[keep], j[keep]], 12) for y in B]
        np.testing.assert_allclose(
            out["rsa_spearman"][b], S.rsa(np.stack(va), np.stack(vb)), atol=1e-10
        )
        for p, x in enumerate(A):
            for q, y in enumerate(B):
                assert out["cka_unbiased"][b, p, q] == pytest.approx(S.cka(x[ix], y[ix]))


def test_metric_registry():
    assert set(S.METRICS) >= {
        "rsa_spearman",
        "rsa_pearson",
        "cka_unbiased",
        "cka_biased",
        "ridge",
        "match",
        "rf_rmse",
        "rf_rmse_neurn",
    }
    assert not S.get_metric("rf_rmse").higher_is_better
    with pytest.raises(ValueError):
        S.get_metric("nope")
    with pytest.raises(ValueError):
        S.register_metric(S.METRICS["ridge"])
    g = rng(12)
    a = S.Representations.from_arrays([g.normal(size=(10, 8))], dtype=np.float64)
    assert S.METRICS["cka_unbiased"].score(a, a)[0, 0] == pytest.approx(1.0)


def test_auto_device_without_a_gpu_driver_is_cpu_and_agrees_with_torch():
    """'auto' answers 'cpu' without importing torch only where no GPU driver is loaded, and
    there torch sees no GPU either; where one is loaded (a GPU machine) it asks torch."""
    import subprocess
    import sys

    code = (
        "import sys; from mice2machines.devices import gpu_driver_absent, resolve_device; "
        "a = gpu_driver_absent(); d = resolve_device('auto'); "
        "print(a, d, 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    absent, device, imported = out.stdout.split()
    torch = pytest.importorskip("torch")
    assert device == ("cuda" if torch.cuda.is_available() else "cpu")
    if absent == "True":
        assert device == "cpu" and imported == "False"
    else:
        assert imported == "True"
