"""Cross-validated PLS regression from a layer's Gram matrix (kernel PLS2, all cells at once).

The form Brain-Score maps with by default: scikit-learn's PLSRegression(n_components=25,
scale=False), fitted on the training images of each fold with every target cell jointly
(NIPALS, mode A, regression deflation). Each component's x-score t is the dominant
eigenvector of K_k Y_k Y_k' (K_k, Y_k deflated by the earlier scores), which NIPALS' power
method approximates; here it is exact (one symmetric eigendecomposition per component), and
everything is a function of the Gram matrix: held-out predictions are
ybar + K_te R (T' K R)^-1 T' Y with R the dual weights (w = X' r). The null refits the whole
PLS on every permutation of the image labels (all cells permuted together), in batches.
"""

from __future__ import annotations

import contextlib

import numpy as np

from .. import devices
from ..devices import array_backend, put64, to_numpy
from .crossval import fold_mean, pearson_cols
from .ridge import _centre_rows_to


def _top_eigvecs(M, xp):
    """(B, m, 1): the eigenvector of the largest eigenvalue of each symmetric (B, m, m).

    LAPACK on the host, the batch split over the CPU threads (BLAS held to one thread
    meanwhile): a GPU's batched eigh solves one matrix at a time above 32 x 32 (measured
    ~1.3 ms each on an H200, slower than the host's cores together)."""
    host = to_numpy(M)
    workers = min(devices.cpu_workers(), len(host))

    def top(part):
        return np.linalg.eigh(part)[1][..., -1:]

    if workers > 1:
        ctl = devices.blas_controller()
        with ctl.limit(limits=1) if ctl is not None else contextlib.nullcontext():
            parts = np.array_split(host, workers)
            out = np.concatenate(list(devices.thread_pool(workers).map(top, parts)))
    else:
        out = top(host)
    return out if xp is np else xp.as_tensor(out, device=M.device)


def _zeros(xp, shape, like):
    if xp is np:
        return np.zeros(shape)
    return xp.zeros(shape, dtype=like.dtype, device=like.device)


def _fold_setup(K: np.ndarray, tr, te, n_components: int) -> dict:
    """One fold's training-centred Grams, a square root of the training Gram and the number
    of components its rank allows."""
    Kc = _centre_rows_to(K, tr)
    Ktr = (Kc[tr] + Kc[tr].T) / 2
    nt = len(tr)
    s, Q = np.linalg.eigh(Ktr)
    top = max(float(s[-1]), 0.0)
    keep = s > nt * np.finfo(np.float64).eps * top
    return {
        "tr": tr,
        "te": te,
        "Ktr": Ktr,
        "Kte": Kc[te],
        "L": Q[:, keep] * np.sqrt(s[keep]),
        "top": top,
        "n_comp": int(min(n_components, keep.sum(), nt - 1)),
    }


def _fit_predict(fd: dict, Ytr, xp):
    """Held-out predictions minus the training mean, (B, n_te, q), of B PLS2 fits at once:
    Ytr (B, nt, q) training responses of B response sets (permutations)."""
    Yc = Ytr - Ytr.mean(-2, keepdims=True)
    B, nt, _ = Yc.shape
    c = fd["n_comp"]
    if c == 0:
        return _zeros(xp, (B, len(fd["te"]), Yc.shape[-1]), Yc)
    Ktr, L = fd["Ktr"], fd["L"]
    cells_side = Yc.shape[-1] < L.shape[-1]  # the smaller eigenproblem: q x q or r x r
    if cells_side:
        Yk = Yc
    else:
        G = Yc @ Yc.mT  # (B, nt, nt)
        DL = L[None].repeat(B, 0) if xp is np else L[None].repeat(B, 1, 1)
    T = _zeros(xp, (B, nt, c), Yc)
    R = _zeros(xp, (B, nt, c), Yc)
    scale = fd["top"]
    for k in range(c):
        if cells_side:  # y-weights: the dominant eigenvector of Y_k' K_k Y_k
            KY = Ktr @ Yk
            KY = KY - T @ (T.mT @ KY)
            r = Yk @ _top_eigvecs(Yk.mT @ KY, xp)
        else:  # x-scores: the dominant eigenvector of K_k G_k, through (D_k L)' G (D_k L)
            t = DL @ _top_eigvecs(DL.mT @ G @ DL, xp)
            r = G @ t
            r = r - T @ (T.mT @ r)
        t = Ktr @ r
        t = t - T @ (T.mT @ t)
        norm = (t * t).sum(-2, keepdims=True) ** 0.5
        rnorm = (r * r).sum(-2, keepdims=True) ** 0.5
        ok = norm > 1e-12 * scale * rnorm
        safe = xp.where(ok, norm, 1.0)
        t = xp.where(ok, t / safe, 0.0)
        r = xp.where(ok, r / safe, 0.0)
        T[..., k : k + 1] = t
        R[..., k : k + 1] = r
        if cells_side:
            Yk = Yk - t @ (t.mT @ Yk)
        else:
            DL = DL - t @ (t.mT @ DL)
    A = T.mT @ Ktr @ R  # (B, c, c); a degenerate component's row and column are 0
    dead = (T * T).sum(-2) == 0  # (B, c)
    eye = xp.eye(c) if xp is np else xp.eye(c, dtype=A.dtype, device=A.device)
    A = A + dead[..., None] * eye
    return fd["Kte"] @ R @ xp.linalg.solve(A, T.mT @ Yc)


class _Engine:
    """The folds of one Gram on one device, applied to batches of response sets."""

    def __init__(self, K, n_components: int, folds, device):
        K = np.asarray(K, dtype=np.float64)
        n = len(K)
        if K.shape != (n, n):
            raise ValueError(f"expected K (n, n), got {K.shape}")
        if not np.isfinite(K).all():
            raise ValueError("K must be finite")
        if int(n_components) < 1:
            raise ValueError(f"n_components must be >= 1, got {n_components}")
        self.n = n
        self.xp, self.tdev = array_backend(device)
        self.folds = []
        for tr, te in folds:
            tr, te = np.asarray(tr, dtype=np.int64), np.asarray(te, dtype=np.int64)
            fd = _fold_setup(K, tr, te, int(n_components))
            self.folds.append(
                {
                    k: v if k in ("n_comp", "top") else put64(v, self.tdev, k in ("tr", "te"))
                    for k, v in fd.items()
                }
            )

    def bytes_per_set(self, q: int) -> int:
        """Bytes one response set of q cells and its temporaries take."""
        return 8 * (4 * self.n * self.n + 6 * self.n * q)

    def run(self, Yb):
        """(fold r (B, folds, q), held-out predictions (B, n, q)) of response sets Yb (B, n, q),
        on the host."""
        B, n, q = Yb.shape
        pred = np.full((B, n, q), np.nan)
        rs = []
        for fd in self.folds:
            tr, te = fd["tr"], fd["te"]
            Ytr = Yb[:, tr]
            dev = _fit_predict(fd, Ytr, self.xp)
            const = (Ytr == Ytr[:, :1]).all(-2, keepdims=True)
            dev = self.xp.where(const, 0.0, dev)
            p = dev + Ytr.mean(-2, keepdims=True)
            yte = Yb[:, te]
            rs.append(to_numpy(pearson_cols(p, yte, self.xp)))
            pred[:, to_numpy(te)] = to_numpy(p)
        return np.stack(rs, axis=1), pred


def pls_fold_scores(
    K, Y, n_components: int, folds, perms=None, fisher: bool = False, device="cpu", pooled=False
) -> dict[str, np.ndarray]:
    """Cross-validated PLS2 predictivity per cell, scored per held-out fold (chance level 0).

    K (n, n): a layer's linear Gram (each fold re-centres it on its training images); Y (n,
    cells): responses, fitted jointly (one PLS per fold over every cell with finite responses;
    cells with non-finite ones get NaN); n_components: at most, capped by the training Gram's
    rank and n_train - 1 (``n_components`` of the output: the number each fold used).
    Equals scikit-learn's PLSRegression(n_components, scale=False) fitted per fold, at
    convergence of its power method.

    Returns ``score`` (cells,): the mean over folds of the held-out Pearson r (with
    ``fisher``, tanh of the mean arctanh; with ``pooled``, one r of the predictions pooled
    over folds); ``fold_r`` (folds, cells); ``prediction`` (n, cells) held-out predictions.
    With ``perms`` (n_perm, n), also ``null`` (n_perm, cells): the same procedure applied to
    Y[perms[k]].
    """
    from .inference import check_perms

    Y = np.asarray(Y, dtype=np.float64)
    eng = _Engine(K, n_components, folds, device)
    n = eng.n
    if Y.ndim != 2 or len(Y) != n:
        raise ValueError(f"expected Y ({n}, cells), got {Y.shape}")
    ok = np.isfinite(Y).all(0)
    Yf = Y[:, ok]

    def reduce(fold_r, pred, cols):
        if pooled:
            return pearson_cols(pred, cols)
        return fold_mean(fold_r.swapaxes(0, 1), fisher)

    def widen(x):
        out = np.full(x.shape[:-1] + (Y.shape[1],), np.nan)
        out[..., ok] = x
        return out

    with np.errstate(invalid="ignore", divide="ignore"):
        fold_r, pred = eng.run(put64(Yf, eng.tdev)[None])
        out = {
            "score": widen(reduce(fold_r, pred, Yf[None])[0]),
            "fold_r": widen(fold_r[0]),
            "prediction": widen(pred[0]),
            "n_components": np.array([fd["n_comp"] for fd in eng.folds]),
        }
        if pooled:
            del out["fold_r"]
        if perms is not None:
            perms = check_perms(perms, n)
            step = max(1, devices.MAX_BLOCK_BYTES // eng.bytes_per_set(Yf.shape[1]))
            null = np.empty((len(perms), Yf.shape[1]))
            Yd = put64(Yf, eng.tdev)
            for p0 in range(0, len(perms), step):
                pb = perms[p0 : p0 + step]
                cols = Yd[put64(pb, eng.tdev, integer=True)]
                fr, pr = eng.run(cols)
                null[p0 : p0 + len(pb)] = reduce(fr, pr, to_numpy(cols))
            out["null"] = widen(null)
    return out
