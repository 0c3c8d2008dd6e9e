"""The Gram engine: a layer of any width streams through once, in chunks of units.

Everything a layer contributes to RDM, CKA and ridge is its stimulus x stimulus Gram matrix
(one matrix product per chunk, torch on a GPU when present, numpy otherwise).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterable, Sequence
from concurrent.futures import wait

import numpy as np

from ..devices import (
    blas_controller,
    cpu_workers,
    resolve_device,
    thread_pool,
    to_device,
    to_numpy,
    torch_device,
    uses_torch,
)
from .rsa import _rdm_vectors, _rsa_vectors


def rdm_from_gram(
    Kc: np.ndarray,
    row_sum: np.ndarray,
    cross: np.ndarray,
    mu_sum: float,
    mu_sq: float,
    p: int,
    eps: float = float(np.finfo(np.float64).eps),
) -> np.ndarray:
    """Correlation RDM of X from its column-centred Gram and a few sums (see GramAccumulator).

    With x_i = xc_i + mu (mu: feature means), the row-centred Gram is
    Kc - p m m' + w 1' + 1 w' + |mu - mean(mu)|^2, m = row means of Xc, w = Xc mu - p mean(mu) m.
    A stimulus whose row variance is within 100x the rounding error of its computation in
    precision `eps` (a constant row) gets NaN dissimilarities.
    """
    m = row_sum / p
    mbar = mu_sum / p
    w = cross - p * mbar * m
    c = mu_sq - p * mbar**2
    R = Kc - p * np.multiply.outer(m, m) + w[:, None] + w[None, :] + c
    r2 = np.diagonal(R)
    kc = np.clip(np.diagonal(Kc), 0, None)
    tol = 100 * eps * (kc + np.sqrt(kc * max(mu_sq, 0.0)) + eps * max(mu_sq, 0.0))
    d = np.where(r2 > tol, np.sqrt(np.clip(r2, 0, None)), np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = 1.0 - R / np.multiply.outer(d, d)
    out = (out + out.T) / 2  # exactly symmetric
    np.fill_diagonal(out, np.where(np.isfinite(d), 0.0, np.nan))
    return out


class GramAccumulator:
    """Stream (stimuli, units) chunks of one representation; keep its Gram statistics.

    Per chunk one matrix product of the column-centred chunk (float32 by default, on CUDA when
    ``device`` says so), summed in float64. ``gram()`` is the column-centred linear Gram
    (for CKA and ridge), ``rdm()`` the correlation RDM, exact for any chunking.

    CPU: per block of units one BLAS ``syrk`` of [Xc; 1; mu] gives the Gram, row sums and
    Xc mu at once. A chunk's blocks are split among ``workers`` threads (default
    ``cpu_workers()``), so that the centring pass scales too; while they run, BLAS is limited
    to one thread (process-wide with OpenBLAS). Per-thread float64 partials are summed in a
    fixed order: a given worker count always gives the same numbers.
    """

    def __init__(
        self,
        n_stimuli: int,
        device: str | None = "cpu",
        dtype=np.float32,
        workers: int | None = None,
    ):
        self.n = int(n_stimuli)
        self.device = resolve_device(device)
        self.dtype = np.dtype(dtype)
        self.workers = workers
        self.p = 0
        self.mu_sum = 0.0
        self.mu_sq = 0.0
        if uses_torch(self.device):
            import torch

            dev = torch_device(self.device)
            z = lambda *s: torch.zeros(s, dtype=torch.float64, device=dev)  # noqa: E731
        else:
            z = lambda *s: np.zeros(s, dtype=np.float64)  # noqa: E731
        self._K = z(self.n, self.n)
        self._row = z(self.n)
        self._cross = z(self.n)

    #: CPU: columns per matrix product, so the centred block stays in cache
    block = 8192
    #: CPU: fewest columns per thread worth a thread
    min_block = 4096

    def update(self, chunk) -> None:
        """Add a (stimuli, units) chunk (numpy or torch)."""
        x = to_device(chunk, self.device, self.dtype)
        if x.ndim != 2 or x.shape[0] != self.n:
            raise ValueError(f"expected a ({self.n}, units) chunk, got {tuple(x.shape)}")
        if x.shape[1] == 0:
            return
        self.p += int(x.shape[1])
        if uses_torch(self.device):
            import torch

            mu = x.mean(0)
            xc = x - mu
            self._K += (xc @ xc.T).double()
            sums = (xc @ torch.stack([torch.ones_like(mu), mu], 1)).double()  # (n, 2)
            mu64 = mu.double()
            self.mu_sum += float(mu64.sum())
            self.mu_sq += float((mu64 * mu64).sum())
            self._row += sums[:, 0]
            self._cross += sums[:, 1]
            return
        w = int(x.shape[1])
        workers = self.workers or cpu_workers()
        nw = max(1, min(workers, w // self.min_block))
        nb = -(-w // self.block)
        nb = -(-nb // nw) * nw  # near-equal blocks, as many for each thread
        edges = [w * i // nb for i in range(nb + 1)]
        spans = [list(zip(edges[k:-1:nw], edges[k + 1 :: nw], strict=True)) for k in range(nw)]
        if getattr(self, "_ones", None) is None:
            self._ones = np.ones(self.n, dtype=self.dtype) / self.n
            self._bufs, self._parts = [], []
        while len(self._bufs) < nw:  # rows: centred block, ones, column means
            buf = np.empty((self.n + 2, self.block), self.dtype)
            buf[self.n] = 1.0
            self._bufs.append(buf)
        # workers > 1: BLAS single-threaded for narrow chunks too, as an idle OpenBLAS thread
        # spins ~0.1 s after each threaded call, taking a core from the workers
        ctl = blas_controller() if workers > 1 else None
        with ctl.limit(limits=1) if ctl is not None else contextlib.nullcontext():
            if nw == 1:
                target = (self._K, self._row, self._cross)
                sums = [self._blocks(x, spans[0], self._bufs[0], target)]
            else:
                sums = self._threaded(x, spans)
        for mu_sum, mu_sq in sums:
            self.mu_sum += mu_sum
            self.mu_sq += mu_sq

    def _threaded(self, x, spans) -> list:
        """Thread k adds its blocks ``spans[k]`` to its own partials (thread 0: to ours)."""
        nw = len(spans)
        while len(self._parts) < nw - 1:
            self._parts.append(tuple(np.zeros(s) for s in ((self.n, self.n), self.n, self.n)))
        for part in self._parts[: nw - 1]:
            for a in part:
                a.fill(0.0)
        targets = [(self._K, self._row, self._cross), *self._parts[: nw - 1]]
        pool = thread_pool(nw - 1)
        futures = [
            pool.submit(self._blocks, x, spans[k], self._bufs[k], targets[k]) for k in range(1, nw)
        ]
        try:
            first = self._blocks(x, spans[0], self._bufs[0], targets[0])
        finally:
            wait(futures)  # they write into our buffers
        for K, row, cross in targets[1:]:  # fixed order: deterministic
            self._K += K
            self._row += row
            self._cross += cross
        return [first, *(f.result() for f in futures)]

    def _blocks(self, x, spans, buf, target) -> tuple[float, float]:
        """Add the column blocks ``spans`` of x to ``target`` (K, row, cross); return the sums
        of the column means and of their squares. One thread's share, in its own buffer."""
        n = self.n
        K, row, cross = target
        mu_sum = mu_sq = 0.0
        for lo, hi in spans:
            xb = x[:, lo:hi]
            z = buf[:, : hi - lo]
            mu = np.matmul(self._ones, xb, out=z[n + 1])  # column means (BLAS)
            np.subtract(xb, mu, out=z[:n])
            # one symmetric product (BLAS syrk) of [Xc; 1; mu]: the Gram, row sums and Xc mu
            zz = z @ z.T
            K += zz[:n, :n]
            row += zz[:n, n]
            cross += zz[:n, n + 1]
            mu64 = mu.astype(np.float64)
            mu_sum += float(mu64.sum())
            mu_sq += float(mu64 @ mu64)
        return mu_sum, mu_sq

    def gram(self) -> np.ndarray:
        """Column-centred linear Gram (n, n), float64."""
        return to_numpy(self._K).astype(np.float64)

    def rdm(self, remove_mean_pattern: bool = False) -> np.ndarray:
        """Correlation-distance RDM (n, n), float64, of the data or (``remove_mean_pattern``)
        of the column-centred data, i.e. without the units' means (see `rdm`)."""
        if self.p == 0:
            raise ValueError("no units were added")
        if remove_mean_pattern:  # the statistics of Xc alone: feature means of zero
            cross, mu_sum, mu_sq = np.zeros(self.n), 0.0, 0.0
        else:
            cross, mu_sum, mu_sq = to_numpy(self._cross), self.mu_sum, self.mu_sq
        return rdm_from_gram(
            self.gram(),
            to_numpy(self._row),
            cross,
            mu_sum,
            mu_sq,
            self.p,
            eps=float(np.finfo(self.dtype).eps),
        )


def linear_gram(X: np.ndarray) -> np.ndarray:
    """Gram (n, n) of features X (n, features), columns centred (as GramAccumulator.gram())."""
    Xc = np.asarray(X, dtype=np.float64)
    Xc = Xc - Xc.mean(0)
    return Xc @ Xc.T


def gram_stats(
    X,
    device: str | None = "cpu",
    dtype=np.float32,
    chunk: int = 8192,
    remove_mean_pattern: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """(column-centred Gram, correlation RDM) of X (stimuli x features), streamed in chunks."""
    acc = GramAccumulator(X.shape[0], device=device, dtype=dtype)
    for lo in range(0, X.shape[1], chunk):
        acc.update(X[:, lo : lo + chunk])
    return acc.gram(), acc.rdm(remove_mean_pattern)


@dataclasses.dataclass
class Representations:
    """Gram matrices and RDMs of k representations of the same n stimuli."""

    names: list
    grams: np.ndarray  # (k, n, n) column-centred linear Gram
    rdms: np.ndarray  # (k, n, n) correlation RDM
    #: neural sides: RDMs (k, n, n) by distance that need the repeats (crossnobis); None for
    #: a model side
    named: dict | None = None

    @classmethod
    def from_arrays(
        cls,
        arrays: Iterable,
        names: Sequence | None = None,
        device: str | None = "cpu",
        dtype=np.float32,
        chunk: int = 8192,
        remove_mean_pattern: bool = False,
    ):
        """Stream each (stimuli, features) array through a GramAccumulator."""
        grams, rdms = [], []
        for X in arrays:
            K, R = gram_stats(X, device, dtype, chunk, remove_mean_pattern)
            grams.append(K)
            rdms.append(R)
        names = list(names) if names is not None else list(range(len(grams)))
        return cls(names, np.stack(grams), np.stack(rdms))


def rsa_table(neural, model, methods: Sequence[str] = ("spearman", "pearson")) -> dict:
    """{method: (neural k, model k) RSA matrix} for two sets of Representations or RDM stacks."""
    a = neural.rdms if isinstance(neural, Representations) else neural
    b = model.rdms if isinstance(model, Representations) else model
    a, b = _rdm_vectors(a)[0], _rdm_vectors(b)[0]  # the triangles once for every method
    return {m: _rsa_vectors(a, b, m, 0.5) for m in methods}
