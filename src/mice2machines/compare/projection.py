"""Sparse random projection of a layer's units before the mapping metrics (ridge, PLS).

As DeepMouseTrap reduces each layer: scikit-learn's SparseRandomProjection with the
Johnson-Lindenstrauss dimension for the images and ``eps`` (or a fixed number of
components), seeded, density 1/sqrt(units). The matrix is scikit-learn's own (drawn by
fitting it on the layer's shape), applied to the streamed chunks of units, so the projected
layer equals ``SparseRandomProjection(...).fit_transform(X)`` of the whole (images, units)
matrix. A layer with no more units than the target dimension is left as it is. Drawing
the matrix is the costly part (scikit-learn draws it row by row: ~5-14 s for 10^5-10^6
units); layers of one width share it, as scikit-learn would draw the same one again.
"""

from __future__ import annotations

import numpy as np

from .gram import linear_gram

#: projection matrices kept for layers of equal width (each ~12 bytes x units x dim / sqrt(units))
KEEP = 4


def target_dim(n_images: int, n_units: int, eps: float, n_components: int | None) -> int | None:
    """The projected dimension, or None where the layer is not projected (no smaller)."""
    from sklearn.random_projection import johnson_lindenstrauss_min_dim

    k = int(n_components) if n_components else int(johnson_lindenstrauss_min_dim(n_images, eps=eps))
    return k if k < n_units else None


def _draw(n_images: int, n_units: int, dim: int, seed: int):
    """scikit-learn's (units, dim) CSR matrix for a layer of this shape and seed."""
    import scipy.sparse
    from sklearn.random_projection import SparseRandomProjection

    srp = SparseRandomProjection(n_components=dim, random_state=seed)
    srp.fit(scipy.sparse.csr_matrix((n_images, n_units), dtype=np.float64))
    return srp.components_.T.tocsr()


class Projector:
    """Accumulates X @ R' over chunks of a layer's units; ``gram()`` of the projected units."""

    def __init__(
        self, n_images: int, n_units: int, eps: float, n_components, seed: int, cache=None
    ):
        self.dim = target_dim(n_images, n_units, eps, n_components)
        if self.dim is None:
            return
        key = ("random_projection", n_units, self.dim, int(seed))
        cache = {} if cache is None else cache
        if key not in cache:
            mine = [k for k in cache if k[0] == key[0]]
            for old in mine[: max(0, len(mine) - KEEP + 1)]:
                del cache[old]
            cache[key] = _draw(n_images, n_units, self.dim, seed)
        self.Rt = cache[key]
        self.out = np.zeros((n_images, self.dim))
        self.done = 0

    @property
    def active(self) -> bool:
        return self.dim is not None

    def update(self, flat: np.ndarray) -> None:
        """The next (images, units) chunk, in the layer's flat unit order."""
        if not self.active:
            return
        w = flat.shape[1]
        part = self.Rt[self.done : self.done + w]
        self.out += np.asarray(part.T @ np.asarray(flat, dtype=np.float64).T).T
        self.done += w

    def gram(self) -> np.ndarray:
        """(images, images) Gram of the column-centred projected units."""
        return linear_gram(self.out)
