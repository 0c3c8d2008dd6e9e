"""RSR: the neural RDM as a non-negative mixture of all of a model's layer RDMs, cross-validated.

Per neural group, the upper triangle d of its RDM is regressed on the stack of the layers'
RDM triangles X (pairs, layers) by non-negative least squares (``scipy.optimize.nnls``) with
an unconstrained intercept (the fit of the centred data: for fixed weights the best
intercept is ybar - xbar w). The images are split into k folds (``ridge.kfold``); fold f
trains on the pairs of two training images and scores the pairs of two images of fold f, so
no test pair shares an image with a training pair (the pairs between the two sets are used
by neither). The score is the Pearson r of predicted and observed held-out dissimilarities,
averaged over folds; a fold whose weights are all zero predicts a constant and scores 0.

Per fold, the layers' normal equations are factored once (``_fold_fit``), so the
permutation null (the neural RDM's images permuted, refitted; all groups and permutations as
columns of one fit) and the bootstrap cost one small NNLS per fold, group and permutation. Bootstrap: a resample weights pair {s, t} by
c_s c_t (its stimulus counts; copies of a stimulus never pair up and stay in one fold) in
the same weighted fit and weighted r.
"""

from __future__ import annotations

import numpy as np

from .ridge import kfold
from .rsa import upper_tri

#: image folds of the RSR metric (seeded as the job's default folds)
N_FOLDS = 5
SEED = 0


def pair_folds(n: int, folds) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per image fold (train, test): the upper-triangle pair indices with both images in the
    training images, and with both in the test images."""
    i, j = np.triu_indices(n, k=1)
    out = []
    for _, te in folds:
        in_te = np.zeros(n, dtype=bool)
        in_te[np.asarray(te)] = True
        both_te = in_te[i] & in_te[j]
        both_tr = ~in_te[i] & ~in_te[j]
        out.append((np.flatnonzero(both_tr), np.flatnonzero(both_te)))
    return out


def _wr(pred: np.ndarray, obs: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Weighted Pearson r between pred (m, k) and obs (m, k); 0 where pred is constant."""
    sw = w.sum()
    pc = pred - (w @ pred) / sw
    oc = obs - (w @ obs) / sw
    num = w @ (pc * oc)
    den = np.sqrt((w @ (pc * pc)) * (w @ (oc * oc)))
    flat = (w @ (pc * pc)) <= 1e-24 * np.maximum(1.0, w @ (pred * pred))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = num / den
    return np.where(flat, 0.0, r)


def _fold_fit(X: np.ndarray, Y: np.ndarray, tr, te, w=None):
    """One fold: NNLS weights (k, L) of each column of Y (m, k) on X (m, L) over the pairs
    tr, and the held-out r (k,) over te (pair weights w, default 1).

    From the (weighted, centred) normal equations C = X'WX = V S V': NNLS on
    (S^1/2 V', S^-1/2 V'X'Wy) over the components with s > 0 has the objective of NNLS on
    (W^1/2 X, W^1/2 y) up to a constant (X'Wy lies in the range of C), so a fold costs one
    L x L eigendecomposition, whatever the number of columns of Y.
    """
    from scipy.optimize import nnls

    wt = np.ones(len(tr)) if w is None else w[tr]
    we = np.ones(len(te)) if w is None else w[te]
    Xt, Yt = X[tr], Y[tr]
    xbar = (wt @ Xt) / wt.sum()
    Xc = Xt - xbar
    XW = Xc.T * wt
    s, V = np.linalg.eigh(XW @ Xc)
    keep = s > max(float(s[-1]), 0.0) * len(s) * np.finfo(np.float64).eps
    s, V = s[keep], V[:, keep]
    R = np.sqrt(s)[:, None] * V.T
    T = (V.T @ (XW @ Yt)) / np.sqrt(s)[:, None]  # (XW @ Yt: the mean of Y cancels)
    W = np.stack([nnls(R, T[:, k])[0] for k in range(Y.shape[1])])
    return W, _wr(X[te] @ W.T, Y[te], we)


def rsr_fit(neural_vecs, layer_vecs, folds, pair_weights=None) -> dict[str, np.ndarray]:
    """RSR of each neural RDM (G, pairs) on the layer RDMs (L, pairs) over image ``folds``.

    Returns ``score`` (G,): the mean held-out r over folds; ``fold_r`` (folds, G);
    ``weights`` (folds, G, L) the non-negative layer weights. ``pair_weights`` (pairs,):
    weights of the pairs (a bootstrap resample's c_s c_t). RDMs must be finite.
    """
    Y = np.ascontiguousarray(np.atleast_2d(np.asarray(neural_vecs, dtype=np.float64)).T)
    X = np.ascontiguousarray(np.atleast_2d(np.asarray(layer_vecs, dtype=np.float64)).T)
    if X.shape[0] != Y.shape[0]:
        raise ValueError(f"RDMs differ in pairs: {Y.shape[0]} vs {X.shape[0]}")
    if not (np.isfinite(X).all() and np.isfinite(Y).all()):
        raise ValueError("RSR needs finite RDMs")
    n = int(round((1 + np.sqrt(1 + 8 * X.shape[0])) / 2))
    rs, ws = [], []
    for tr, te in pair_folds(n, folds):
        W, r = _fold_fit(X, Y, tr, te, pair_weights)
        rs.append(r)
        ws.append(W)
    fold_r = np.stack(rs)
    return {"score": fold_r.mean(0), "fold_r": fold_r, "weights": np.stack(ws)}


def _finite(neural, model):
    """Upper triangles of both RDM stacks and which neural groups are finite (a layer with a
    NaN pair is left out of the stack: it has no RDM)."""
    a, b = upper_tri(neural.rdms), upper_tri(model.rdms)
    ok_a = np.isfinite(a).all(1)
    ok_b = np.isfinite(b).all(1)
    return a, b[ok_b], ok_a


def _tile(values: np.ndarray, n_layers: int) -> np.ndarray:
    return np.repeat(values[..., None], n_layers, axis=-1)


def rsr_score(neural, model) -> np.ndarray:
    """(G, L) the model's RSR score per group, repeated over its L layers (a per-model
    metric)."""
    a, b, ok = _finite(neural, model)
    out = np.full(len(a), np.nan)
    n = neural.rdms.shape[-1]
    if ok.any() and len(b):
        out[ok] = rsr_fit(a[ok], b, kfold(n, N_FOLDS, SEED))["score"]
    return _tile(out, len(model.rdms))


def rsr_null(neural, model, perms, device=None) -> np.ndarray:
    """(n_perm, G, L) RSR refitted with each neural RDM's images permuted."""
    a, b, ok = _finite(neural, model)
    n = neural.rdms.shape[-1]
    perms = np.asarray(perms, dtype=np.int64)
    out = np.full((len(perms), len(a)), np.nan)
    if ok.any() and len(b):
        iu, ju = np.triu_indices(n, k=1)
        pair = np.zeros((n, n), dtype=np.int64)
        pair[iu, ju] = pair[ju, iu] = np.arange(len(iu))
        idx = pair[perms[:, iu], perms[:, ju]]  # (P, pairs)
        good = np.flatnonzero(ok)
        stacked = a[good][:, idx].reshape(-1, len(iu))  # (groups x P, pairs)
        score = rsr_fit(stacked, b, kfold(n, N_FOLDS, SEED))["score"]
        out[:, good] = score.reshape(len(good), len(perms)).T
    return _tile(out, len(model.rdms))


def rsr_bootstrap(neural, model, indices, device=None) -> np.ndarray:
    """(n_boot, G, L) RSR of each resample: pair {s, t} weighted c_s c_t (``rsr_fit``)."""
    from .bootstrap import resample_counts

    a, b, ok = _finite(neural, model)
    n = neural.rdms.shape[-1]
    counts = resample_counts(indices, n)
    iu, ju = np.triu_indices(n, k=1)
    out = np.full((len(counts), len(a)), np.nan)
    folds = kfold(n, N_FOLDS, SEED)
    if ok.any() and len(b):
        for k, c in enumerate(counts):
            w = c[iu] * c[ju]
            tests = [te for _, te in pair_folds(n, folds)]
            if all(w[te].sum() > 0 and (w[te] > 0).sum() > 2 for te in tests):
                out[k, ok] = rsr_fit(a[ok], b, folds, pair_weights=w)["score"]
    return _tile(out, len(model.rdms))
