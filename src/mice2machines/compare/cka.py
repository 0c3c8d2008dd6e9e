"""Linear CKA from Gram matrices: unbiased HSIC (Song et al. 2012) by default, or biased."""

from __future__ import annotations

import numpy as np


def centre_gram(K: np.ndarray) -> np.ndarray:
    """Double-centred Gram matrix H K H (batched over leading axes)."""
    K = np.asarray(K, dtype=np.float64)
    row = K.mean(-1, keepdims=True)
    col = K.mean(-2, keepdims=True)
    tot = K.mean((-2, -1), keepdims=True)
    return K - row - col + tot


def u_centre_gram(K: np.ndarray) -> np.ndarray:
    """U-centred Gram matrix (zero diagonal): <U(K), U(L)> / (n(n-3)) is unbiased HSIC."""
    K = np.array(K, dtype=np.float64, copy=True)
    n = K.shape[-1]
    if n < 4:
        raise ValueError("unbiased HSIC needs at least 4 stimuli")
    idx = np.arange(n)
    K[..., idx, idx] = 0.0
    row = K.sum(-1, keepdims=True) / (n - 2)
    col = K.sum(-2, keepdims=True) / (n - 2)
    tot = K.sum((-2, -1), keepdims=True) / ((n - 1) * (n - 2))
    U = K - row - col + tot
    U[..., idx, idx] = 0.0
    return U


def hsic(K: np.ndarray, L: np.ndarray, unbiased: bool = True) -> float:
    """HSIC of two Gram matrices: unbiased (Song et al. 2012) or biased tr(KHLH)/(n-1)^2."""
    n = K.shape[-1]
    if unbiased:
        return float(np.sum(u_centre_gram(K) * u_centre_gram(L)) / (n * (n - 3)))
    return float(np.sum(centre_gram(K) * centre_gram(L)) / (n - 1) ** 2)


def cka_from_grams(K, L, unbiased: bool = True):
    """Linear CKA from Gram matrices: float for (n, n) inputs, (A, B) for stacks."""
    K = np.asarray(K, dtype=np.float64)
    L = np.asarray(L, dtype=np.float64)
    single = K.ndim == 2 and L.ndim == 2
    K = K.reshape((-1,) + K.shape[-2:])
    L = L.reshape((-1,) + L.shape[-2:])
    centre = u_centre_gram if unbiased else centre_gram
    A = centre(K).reshape(len(K), -1)
    B = centre(L).reshape(len(L), -1)
    num = A @ B.T
    na = np.einsum("ij,ij->i", A, A)
    nb = np.einsum("ij,ij->i", B, B)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = num / np.sqrt(na[:, None] * nb[None, :])
    return float(out[0, 0]) if single else out


def cka(X, Y, unbiased: bool = True) -> float:
    """Linear CKA between X (stimuli x p) and Y (stimuli x q); unbiased HSIC by default."""
    X = np.asarray(X, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    if X.shape[0] != Y.shape[0]:
        raise ValueError(f"X and Y differ in stimuli: {X.shape[0]} vs {Y.shape[0]}")
    X = X - X.mean(0)
    Y = Y - Y.mean(0)
    return cka_from_grams(X @ X.T, Y @ Y.T, unbiased=unbiased)
