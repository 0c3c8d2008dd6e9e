"""The similarity engine: RDMs, RSA, CKA, ridge predictivity, one-to-one matching, ceilings.

Public functions work on plain arrays (stimuli along the first axis):

- ``rdm(X)``: (stimuli, features) -> square 1 - Pearson dissimilarity matrix.
- ``rsa(rdm_a, rdm_b, method="spearman")``: compare RDMs on their upper triangle.
- ``cka(X, Y, unbiased=True)``: linear CKA; unbiased HSIC (Song et al. 2012) by default.
- ``ridge_predictivity``, ``match_units``: per-neuron held-out correlations.

Everything a layer contributes to RDM, CKA and ridge is its stimulus x stimulus Gram matrix,
so layers of any width stream through ``GramAccumulator`` in chunks of units (one matrix
product per chunk, torch on a GPU when present, numpy otherwise); ``MatchAccumulator`` streams
the same chunks for one-to-one matching. ``METRICS`` is the named registry of metrics.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import threading
import warnings
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait

import numpy as np
from scipy.stats import rankdata

# --------------------------------------------------------------------------- devices


def resolve_device(device: str | None = None) -> str:
    """'cpu' (numpy) or a torch device ('cuda', 'cuda:N'; 'torch:cpu' runs the torch code on
    the CPU); None/'auto' picks CUDA when torch sees one."""
    if device not in (None, "auto"):
        return str(device)
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is installed wherever CUDA is
        return "cpu"
    return "cuda" if torch.cuda.is_available() else "cpu"


def _is_cuda(device: str) -> bool:
    """True where torch computes: 'cuda', 'cuda:N', or 'torch:cpu' (torch on the CPU)."""
    return str(device).startswith(("cuda", "torch:"))


def _torch_device(device: str) -> str:
    return str(device).removeprefix("torch:")


def _to_device(x, device: str, dtype):
    """numpy array on CPU, torch tensor on CUDA, in the compute dtype."""
    if _is_cuda(device):
        import torch

        tdt = getattr(torch, np.dtype(dtype).name)
        if isinstance(x, torch.Tensor):
            return x.to(device=_torch_device(device), dtype=tdt)
        x = torch.as_tensor(np.ascontiguousarray(x))
        return x.to(device=_torch_device(device), dtype=tdt)
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def _to_numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):
        return x.detach().cpu().numpy()
    return np.asarray(x)


# --------------------------------------------------------------------------- RDMs


def rdm(X, dtype=np.float64, remove_mean_pattern: bool = False) -> np.ndarray:
    """Square RDM, 1 - Pearson correlation between the rows (stimuli) of X (stimuli x features).

    As rsatoolbox's ``calc_rdm(method="correlation")``; with ``remove_mean_pattern`` each
    feature is first centred over the stimuli (the mean pattern removed). A constant row gives
    NaN dissimilarities.
    """
    X = np.asarray(X, dtype=dtype)
    if X.ndim != 2:
        raise ValueError(f"rdm expects a (stimuli, features) array, got shape {X.shape}")
    if remove_mean_pattern:
        X = X - X.mean(axis=0)
    Xc = X - X.mean(axis=1, keepdims=True)
    norm = np.sqrt(np.einsum("ij,ij->i", Xc, Xc))
    with np.errstate(invalid="ignore", divide="ignore"):
        Z = Xc / norm[:, None]
    out = 1.0 - (Z @ Z.T).astype(np.float64)
    out = (out + out.T) / 2  # exactly symmetric
    np.fill_diagonal(out, np.where(norm > 0, 0.0, np.nan))
    return out


def upper_tri(rdms: np.ndarray) -> np.ndarray:
    """Upper-triangle vectors (k=1) of one (n, n) or a stack (..., n, n) of square RDMs."""
    rdms = np.asarray(rdms)
    n = rdms.shape[-1]
    i, j = np.triu_indices(n, k=1)
    return rdms[..., i, j]


def square(vector: np.ndarray) -> np.ndarray:
    """Square RDM(s) from upper-triangle vector(s) (..., n(n-1)/2)."""
    v = np.asarray(vector)
    m = v.shape[-1]
    n = int(round((1 + np.sqrt(1 + 8 * m)) / 2))
    if n * (n - 1) // 2 != m:
        raise ValueError(f"{m} is not a triangular number of pairs")
    out = np.zeros(v.shape[:-1] + (n, n), dtype=v.dtype)
    i, j = np.triu_indices(n, k=1)
    out[..., i, j] = v
    out[..., j, i] = v
    return out


def _rdm_vectors(r) -> tuple[np.ndarray, bool]:
    """(k, pairs) vectors from a square RDM, a stack of squares, a vector or a stack of them."""
    r = np.asarray(r, dtype=np.float64)
    if r.ndim == 1:
        return r[None], True
    if r.ndim == 2 and r.shape[0] == r.shape[1]:
        return upper_tri(r)[None], True
    if r.ndim == 3 and r.shape[1] == r.shape[2]:
        return upper_tri(r), False
    if r.ndim == 2:
        return r, False
    raise ValueError(f"cannot read RDMs of shape {r.shape}")


def _centred_unit(v: np.ndarray) -> np.ndarray:
    v = v - v.mean(axis=-1, keepdims=True)
    norm = np.sqrt(np.einsum("...i,...i->...", v, v))
    with np.errstate(invalid="ignore", divide="ignore"):
        return v / norm[..., None]


def _rank_rows(v: np.ndarray) -> np.ndarray:
    """Average ranks along the last axis of a 2-D block: one unstable argsort and a scatter
    (half of scipy's stable-sort rankdata); rows with ties or NaN go to rankdata."""
    k, m = v.shape
    order = np.argsort(v, axis=-1)
    ranks = np.empty_like(v, dtype=np.float64)
    ranks[np.arange(k)[:, None], order] = np.arange(1.0, m + 1.0)
    s = np.take_along_axis(v, order, axis=-1)
    odd = (s[:, 1:] == s[:, :-1]).any(axis=-1) | np.isnan(s[:, -1])
    if odd.any():
        ranks[odd] = rankdata(v[odd], axis=-1)
    return ranks


def _rank(v: np.ndarray) -> np.ndarray:
    """scipy.stats.rankdata(v, axis=-1) as float64; row blocks on the CPU Gram's threads."""
    v = np.asarray(v)
    flat = v.reshape(-1, v.shape[-1]) if v.ndim != 2 else v
    workers = min(cpu_workers(), len(flat) // 8)
    if workers < 2 or threading.current_thread().name.startswith("gram"):  # no pool in pool
        out = _rank_rows(flat)
    else:
        blocks = np.array_split(np.arange(len(flat)), workers)
        out = np.concatenate(list(_pool(workers).map(lambda i: _rank_rows(flat[i]), blocks)))
    return out.reshape(v.shape)


def _cmp_pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return _centred_unit(a) @ _centred_unit(b).T


def _cmp_spearman(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return _cmp_pearson(_rank(a), _rank(b))


def _cmp_rho_a(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    n = a.shape[-1]
    ra = _rank(a)
    rb = _rank(b)
    ra -= ra.mean(-1, keepdims=True)
    rb -= rb.mean(-1, keepdims=True)
    return ra @ rb.T * (12.0 / (n**3 - n))


def _cmp_cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    na = a / np.linalg.norm(a, axis=-1, keepdims=True)
    nb = b / np.linalg.norm(b, axis=-1, keepdims=True)
    return na @ nb.T


#: RDM comparators by name (rsatoolbox's names where they exist).
RDM_COMPARATORS: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "spearman": _cmp_spearman,
    "pearson": _cmp_pearson,
    "corr": _cmp_pearson,
    "rho-a": _cmp_rho_a,
    "cosine": _cmp_cosine,
}


def rsa(rdm_a, rdm_b, method: str = "spearman", min_fraction: float = 0.5):
    """Similarity of RDMs on the upper triangle: a float, or an (A, B) matrix for stacks.

    Inputs: square RDMs (n, n), stacks (k, n, n), vectors (pairs,) or stacks (k, pairs).
    method: spearman | pearson (alias corr) | rho-a | cosine. Pairs that are NaN in either
    RDM of a comparison are dropped from that comparison; it is NaN when fewer than
    `min_fraction` of the pairs remain (degenerate representations).
    """
    a, single_a = _rdm_vectors(rdm_a)
    b, single_b = _rdm_vectors(rdm_b)
    out = _rsa_vectors(a, b, method, min_fraction)
    if single_a and single_b:
        return float(out[0, 0])
    return out


def _rsa_vectors(a: np.ndarray, b: np.ndarray, method: str, min_fraction: float) -> np.ndarray:
    """(A, B) comparisons of two stacks of upper-triangle vectors (float64)."""
    if method not in RDM_COMPARATORS:
        raise ValueError(f"unknown RSA method {method!r}; known: {sorted(RDM_COMPARATORS)}")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"RDMs differ in size: {a.shape[1]} vs {b.shape[1]} pairs")
    fn = RDM_COMPARATORS[method]
    fa, fb = np.isfinite(a), np.isfinite(b)
    if fa.all() and fb.all():
        out = fn(a, b)
    else:  # pairs that are NaN in either RDM of a comparison are dropped from that comparison
        out = np.full((len(a), len(b)), np.nan)
        for i in range(len(a)):
            for j in range(len(b)):
                ok = fa[i] & fb[j]
                if ok.sum() >= max(3, min_fraction * len(ok)):
                    out[i, j] = fn(a[i : i + 1, ok], b[j : j + 1, ok])[0, 0]
    return out


# --------------------------------------------------------------------------- Gram statistics


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


_BLAS = None  # threadpoolctl's controller of the loaded BLAS; False without threadpoolctl
_POOL: tuple[int, ThreadPoolExecutor] | None = None  # (threads, pool)
_POOL_LOCK = threading.Lock()


def _blas():
    global _BLAS
    if _BLAS is None:
        try:
            from threadpoolctl import ThreadpoolController

            _BLAS = ThreadpoolController().select(user_api="blas")
        except ImportError:
            _BLAS = False
    return _BLAS or None


def cpu_workers() -> int:
    """Threads for the CPU Gram: BLAS's current thread count, at most the usable cores
    (1 without threadpoolctl), so that the threads replace BLAS's rather than add to them."""
    ctl = _blas()
    if ctl is None:
        return 1
    blas = max((lib.num_threads for lib in ctl.lib_controllers), default=1)
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, min(blas, cores))


def _pool(n: int) -> ThreadPoolExecutor:
    """A shared pool of at least n threads."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None or _POOL[0] < n:
            if _POOL is not None:
                _POOL[1].shutdown(wait=False)
            _POOL = (n, ThreadPoolExecutor(n, thread_name_prefix="gram"))
        return _POOL[1]


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
        if _is_cuda(self.device):
            import torch

            dev = _torch_device(self.device)
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
        x = _to_device(chunk, self.device, self.dtype)
        if x.ndim != 2 or x.shape[0] != self.n:
            raise ValueError(f"expected a ({self.n}, units) chunk, got {tuple(x.shape)}")
        if x.shape[1] == 0:
            return
        self.p += int(x.shape[1])
        if _is_cuda(self.device):
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
        ctl = _blas() if workers > 1 else None
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
        pool = _pool(nw - 1)
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
        return _to_numpy(self._K).astype(np.float64)

    def rdm(self, remove_mean_pattern: bool = False) -> np.ndarray:
        """Correlation-distance RDM (n, n), float64, of the data or (``remove_mean_pattern``)
        of the column-centred data, i.e. without the units' means (see `rdm`)."""
        if self.p == 0:
            raise ValueError("no units were added")
        if remove_mean_pattern:  # the statistics of Xc alone: feature means of zero
            cross, mu_sum, mu_sq = np.zeros(self.n), 0.0, 0.0
        else:
            cross, mu_sum, mu_sq = _to_numpy(self._cross), self.mu_sum, self.mu_sq
        return rdm_from_gram(
            self.gram(),
            _to_numpy(self._row),
            cross,
            mu_sum,
            mu_sq,
            self.p,
            eps=float(np.finfo(self.dtype).eps),
        )


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

    def take(self, idx) -> Representations:
        """A subset by position."""
        idx = np.atleast_1d(idx)
        return Representations([self.names[i] for i in idx], self.grams[idx], self.rdms[idx])


def rsa_table(neural, model, methods: Sequence[str] = ("spearman", "pearson")) -> dict:
    """{method: (neural k, model k) RSA matrix} for two sets of Representations or RDM stacks."""
    a = neural.rdms if isinstance(neural, Representations) else neural
    b = model.rdms if isinstance(model, Representations) else model
    a, b = _rdm_vectors(a)[0], _rdm_vectors(b)[0]  # the triangles once for every method
    return {m: _rsa_vectors(a, b, m, 0.5) for m in methods}


# --------------------------------------------------------------------------- metric registry


@dataclasses.dataclass(frozen=True)
class Metric:
    """A named comparison metric.

    kind 'representation': fn(neural: Representations, model: Representations) -> (A, B)
    matrix; kind 'cell': a per-neuron score computed by the streaming engine (fn is None) and
    summarised per group by its median.
    """

    name: str
    kind: str
    higher_is_better: bool
    description: str
    fn: Callable | None = None


METRICS: dict[str, Metric] = {}


def register_metric(metric: Metric) -> Metric:
    """Add a metric to the registry (the name must be new)."""
    if metric.name in METRICS:
        raise ValueError(f"metric {metric.name!r} is already registered")
    if metric.kind not in ("representation", "cell"):
        raise ValueError(f"unknown metric kind {metric.kind!r}")
    METRICS[metric.name] = metric
    return metric


def get_metric(name: str) -> Metric:
    """A registered metric by name."""
    try:
        return METRICS[name]
    except KeyError:
        raise ValueError(f"unknown metric {name!r}; known: {sorted(METRICS)}") from None


for _name, _method in (("rsa_spearman", "spearman"), ("rsa_pearson", "pearson")):
    register_metric(
        Metric(
            _name,
            "representation",
            True,
            f"RSA: {_method} correlation of 1 - Pearson RDMs (upper triangle; the workflow "
            "removes the mean pattern first, compare.rsa_remove_mean_pattern)",
            lambda a, b, _m=_method: rsa(a.rdms, b.rdms, method=_m),
        )
    )
register_metric(
    Metric(
        "cka_unbiased",
        "representation",
        True,
        "linear CKA, unbiased HSIC (Song et al. 2012)",
        lambda a, b: cka_from_grams(a.grams, b.grams, unbiased=True),
    )
)
register_metric(
    Metric(
        "cka_biased",
        "representation",
        True,
        "linear CKA, biased HSIC",
        lambda a, b: cka_from_grams(a.grams, b.grams, unbiased=False),
    )
)
register_metric(
    Metric(
        "ridge", "cell", True, "cross-validated ridge predictivity: held-out Pearson r per neuron"
    )
)
register_metric(
    Metric(
        "match",
        "cell",
        True,
        "one-to-one matching: best unit on train images, held-out r per neuron",
    )
)
register_metric(
    Metric("rf_rmse", "cell", False, "RMSE between a neuron's map and its best unit's map (paper)")
)
register_metric(
    Metric(
        "rf_rmse_neurn",
        "cell",
        False,
        "rf_rmse with NeuRN applied to the feature maps first (paper)",
    )
)


# --------------------------------------------------------------------------- ceilings


def spearman_brown(r, factor: float = 2.0):
    """Spearman-Brown step-up of a reliability r to `factor` times the data."""
    r = np.asarray(r, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return factor * r / (1 + (factor - 1) * r)


def split_halves(responses: np.ndarray, n_splits: int = 10, seed: int = 0):
    """Yield (half_a, half_b) trial means (cells, stimuli) over random halves of the repeats.

    responses: (cells, stimuli, repeats) with NaN for missing repeats.
    """
    rng = np.random.default_rng(seed)
    n_rep = responses.shape[-1]
    if n_rep < 2:
        raise ValueError("split halves need at least 2 repeats")
    for _ in range(n_splits):
        order = rng.permutation(n_rep)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            a = np.nanmean(responses[..., order[: n_rep // 2]], axis=-1)
            b = np.nanmean(responses[..., order[n_rep // 2 :]], axis=-1)
        yield a, b


def _nan_to_mean(x: np.ndarray) -> np.ndarray:
    """Replace NaN (a stimulus with no repeat in a half) by the neuron's mean response."""
    if np.isnan(x).any():
        fill = np.nanmean(x, axis=-1, keepdims=True)
        x = np.where(np.isnan(x), np.nan_to_num(fill), x)
    return x


def group_ceilings(
    responses: np.ndarray,
    groups: dict,
    n_splits: int = 10,
    seed: int = 0,
    methods: Sequence[str] = ("spearman", "pearson"),
    remove_mean_pattern: bool = False,
) -> dict:
    """Split-half (Spearman-Brown) ceilings of the representation metrics for neural groups.

    responses: (cells, stimuli, repeats); groups: {name: cell positions}. Returns
    {metric: (G,) array}, the mean over splits of the step-up of the half-vs-half score.
    ``remove_mean_pattern``: of the RSA RDMs, as in `rdm`.
    """
    names = list(groups)
    reps = functools.partial(
        Representations.from_arrays, dtype=np.float64, remove_mean_pattern=remove_mean_pattern
    )
    acc: dict[str, list] = {f"rsa_{m}": [] for m in methods}
    acc.update({"cka_unbiased": [], "cka_biased": []})
    for a, b in split_halves(responses, n_splits, seed):
        a = _nan_to_mean(a)
        b = _nan_to_mean(b)
        ra = reps([a[groups[g]].T for g in names], names)
        rb = reps([b[groups[g]].T for g in names], names)
        for m in methods:
            acc[f"rsa_{m}"].append(np.diag(rsa(ra.rdms, rb.rdms, method=m)))
        acc["cka_unbiased"].append(np.diag(cka_from_grams(ra.grams, rb.grams, True)))
        acc["cka_biased"].append(np.diag(cka_from_grams(ra.grams, rb.grams, False)))
    return {k: spearman_brown(np.mean(v, axis=0)) for k, v in acc.items()}


def cell_reliability(responses: np.ndarray, n_splits: int = 10, seed: int = 0) -> np.ndarray:
    """Per-cell split-half reliability of the mean response (Spearman-Brown), mean over splits."""
    rs = []
    for a, b in split_halves(responses, n_splits, seed):
        rs.append(pearson_rows(_nan_to_mean(a), _nan_to_mean(b)))
    return spearman_brown(np.mean(rs, axis=0))


def pearson_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson r between matching rows of a and b (last axis = observations)."""
    a = a - a.mean(-1, keepdims=True)
    b = b - b.mean(-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.einsum("...i,...i->...", a, b) / np.sqrt(
            np.einsum("...i,...i->...", a, a) * np.einsum("...i,...i->...", b, b)
        )


# --------------------------------------------------------------------------- bootstrap


def bootstrap_indices(n: int, n_boot: int, seed: int = 0) -> np.ndarray:
    """(n_boot, n) stimulus indices drawn with replacement (seeded)."""
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def bootstrap_representation(
    neural: Representations, model: Representations, metrics: Sequence[str], indices: np.ndarray
) -> dict:
    """{metric: (n_boot, A, B)} representation metrics over resampled stimuli.

    RSA drops pairs of a stimulus with its own copy (rsatoolbox's convention); CKA uses the
    resampled Gram matrices.
    """
    out = {m: np.empty((len(indices), len(neural.names), len(model.names))) for m in metrics}
    na = len(neural.names)
    both_r = np.concatenate([neural.rdms, model.rdms])
    both_k = np.concatenate([neural.grams, model.grams])
    for b, idx in enumerate(indices):
        i, j = np.triu_indices(len(idx), k=1)
        keep = idx[i] != idx[j]
        a, b_ = idx[i[keep]], idx[j[keep]]
        ii, jj = np.minimum(a, b_), np.maximum(a, b_)  # the upper-triangle entry
        vec = None
        for m in metrics:
            if m.startswith("rsa_"):
                if vec is None:
                    vec = both_r[:, ii, jj]
                method = m[4:]
                out[m][b] = RDM_COMPARATORS[method](vec[:na], vec[na:])
            elif m.startswith("cka_"):
                K = both_k[:, idx][:, :, idx]
                out[m][b] = cka_from_grams(K[:na], K[na:], unbiased=m == "cka_unbiased")
            else:
                raise ValueError(f"{m!r} is not a representation metric")
    return out


def bootstrap_cell_r(pred: np.ndarray, obs: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """(n_boot, cells) Pearson r of predictions vs observations over resampled stimuli.

    pred, obs: (cells, stimuli). Uses stimulus counts and five matrix products, so cost does not
    grow with repeated sampling of the same stimulus.
    """
    n = pred.shape[1]
    counts = np.zeros((len(indices), n))
    for b, idx in enumerate(indices):
        counts[b] = np.bincount(idx, minlength=n)
    C = counts.T
    pred = np.asarray(pred, dtype=np.float64)
    obs = np.asarray(obs, dtype=np.float64)
    pred = pred - pred.mean(1, keepdims=True)
    obs = obs - obs.mean(1, keepdims=True)
    sp, so = pred @ C, obs @ C
    spp, soo, spo = (pred * pred) @ C, (obs * obs) @ C, (pred * obs) @ C
    cov = spo - sp * so / n
    with np.errstate(invalid="ignore", divide="ignore"):
        r = cov / np.sqrt((spp - sp**2 / n) * (soo - so**2 / n))
    return r.T


def percentile_ci(samples: np.ndarray, level: float = 0.95, axis: int = 0, estimate=None):
    """(low, high) percentile interval of bootstrap samples along `axis`, NaNs ignored.

    With `estimate`, the interval is the spread of the samples around their median, placed on
    the estimate (estimate + percentiles of samples - median): resampling stimuli with
    replacement duplicates some and biases similarity upwards, which this removes.
    """
    q = 100 * (1 - level) / 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        lo, med, hi = np.nanpercentile(samples, [q, 50, 100 - q], axis=axis)
    if estimate is None:
        return lo, hi
    return estimate + lo - med, estimate + hi - med


# --------------------------------------------------------------------------- folds


def kfold(n: int, n_folds: int = 5, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Seeded K-fold (train, test) stimulus indices, every stimulus tested exactly once."""
    if not 2 <= n_folds <= n:
        raise ValueError(f"n_folds must be in 2..{n}, got {n_folds}")
    perm = np.random.default_rng(seed).permutation(n)
    folds = np.array_split(perm, n_folds)
    return [
        (np.sort(np.concatenate(folds[:k] + folds[k + 1 :])), np.sort(folds[k]))
        for k in range(n_folds)
    ]


# --------------------------------------------------------------------------- ridge


def _centre_rows_to(K: np.ndarray, tr: np.ndarray) -> np.ndarray:
    """Gram (all, tr) of features centred on the training stimuli' means."""
    a = K[:, tr].mean(1)
    c = a[tr].mean()
    return K[:, tr] - a[:, None] - a[tr][None, :] + c


def ridge_cv(
    K: np.ndarray,
    Y: np.ndarray,
    alphas: Sequence[float],
    folds: Sequence[tuple[np.ndarray, np.ndarray]],
    cell_block: int = 2048,
) -> tuple[np.ndarray, np.ndarray]:
    """Cross-validated ridge predictions of Y (stimuli, cells) from a linear Gram K (n, n).

    Per fold the intercept is unpenalised, and each cell's alpha is chosen from `alphas` by
    exact leave-one-out error on the training stimuli (as scikit-learn's RidgeCV with
    alpha_per_target=True); the closed form uses one eigendecomposition of the training Gram.
    Returns (predictions (stimuli, cells) for each stimulus from the fold that held it out,
    chosen alpha index (folds, cells)).
    """
    K = np.asarray(K, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    alphas = np.asarray(alphas, dtype=np.float64)
    pred = np.full(Y.shape, np.nan)
    chosen = np.zeros((len(folds), Y.shape[1]), dtype=np.int64)
    for f, (tr, te) in enumerate(folds):
        Kc = _centre_rows_to(K, tr)
        s, Q = np.linalg.eigh(Kc[tr])
        s = np.clip(s, 0, None)
        shrink = s[None, :] / (s[None, :] + alphas[:, None])  # (alphas, n_tr)
        lev = 1.0 / len(tr) + (Q**2) @ shrink.T  # (n_tr, alphas)
        for lo in range(0, Y.shape[1], cell_block):
            cs = slice(lo, lo + cell_block)
            yt = Y[tr, cs]
            ybar = yt.mean(0)
            QtY = Q.T @ (yt - ybar)  # (n_tr, cells)
            resid = (yt - ybar)[None] - np.einsum("ik,ak,kc->aic", Q, shrink, QtY, optimize=True)
            loo = resid / (1.0 - lev.T)[:, :, None]
            best = np.argmin((loo**2).mean(1), axis=0)  # first minimum, as scikit-learn
            chosen[f, cs] = best
            coef = QtY[None] / (s[None, :, None] + alphas[:, None, None])
            coef = coef[best, :, np.arange(len(best))].T  # (n_tr, cells)
            pred[te, cs] = ybar + Kc[te] @ (Q @ coef)
    return pred, chosen


def ridge_predictivity(
    X, Y, alphas: Sequence[float] = tuple(10.0 ** np.arange(-2, 7)), n_folds: int = 5, seed: int = 0
) -> np.ndarray:
    """Per-cell Pearson r of cross-validated ridge predictions of Y (stimuli, cells) from X."""
    X = np.asarray(X, dtype=np.float64)
    Xc = X - X.mean(0)
    pred, _ = ridge_cv(Xc @ Xc.T, Y, alphas, kfold(len(X), n_folds, seed))
    return pearson_rows(pred.T, np.asarray(Y, dtype=np.float64).T)


# --------------------------------------------------------------------------- matching


class MatchAccumulator:
    """One-to-one neuron-to-unit matching streamed over chunks of units.

    For every fold the best unit of each neuron is the one whose activations correlate best
    with the neuron's responses on the training stimuli (numpy: one matrix product per chunk
    and fold; torch/CUDA: all folds at once, on CUDA through a fused Triton kernel that never
    writes the cells x units product, see ``_update_torch``). ``result()`` maps each neuron's
    best unit by least squares on the training stimuli and predicts the held-out ones.
    """

    # torch on CUDA: the fused Triton kernel (matchkernel) where triton imports; else, and if
    # False, plain torch, with units per batched product cut so that folds x cells x units
    # stays under max_product (4 GiB of float32), whatever the chunk size
    fused = True
    max_product = 1 << 30

    def __init__(
        self,
        Y,
        folds: Sequence[tuple[np.ndarray, np.ndarray]],
        device: str | None = "cpu",
        dtype=np.float32,
    ):
        self.Y = np.asarray(Y, dtype=np.float64)  # (stimuli, cells)
        self.n, self.n_cells = self.Y.shape
        self.folds = [(np.asarray(tr), np.asarray(te)) for tr, te in folds]
        self.device = resolve_device(device)
        self.dtype = np.dtype(dtype)
        self._cuda = _is_cuda(self.device)
        self.n_units = 0
        if self._cuda:
            self._init_torch()
            return
        self._A, self._tr = [], []
        for tr, _ in self.folds:
            y = self.Y[tr] - self.Y[tr].mean(0)
            norm = np.sqrt((y * y).sum(0))
            with np.errstate(invalid="ignore", divide="ignore"):
                a = np.where(norm > 0, y / norm, 0.0)
            # one extra column of ones meets a penalty row that keeps constant units out
            a = np.concatenate([a.T, np.ones((self.n_cells, 1))], axis=1)
            self._A.append(_to_device(a, self.device, self.dtype))  # (cells, n_tr + 1)
            self._tr.append(_to_device(tr, self.device, np.int64))
        k = len(self.folds)
        self.best_r = np.full((k, self.n_cells), -np.inf)
        self.best_unit = np.full((k, self.n_cells), -1, dtype=np.int64)
        self.best_act = np.zeros((k, self.n_cells, self.n))

    def _init_torch(self) -> None:
        """The folds' neuron matrices as one (folds, cells, >= m + 1) tensor, built on the device
        (m: the most training stimuli of any fold; column m: ones that meet the penalty row;
        zero columns up to the kernel's multiple of 32). Folds are sorted by training size,
        so the folds of one size are one slice; a smaller fold's missing columns are zero."""
        import torch

        dev, k, c = _torch_device(self.device), len(self.folds), self.n_cells
        sizes = [len(tr) for tr, _ in self.folds]
        order = sorted(range(k), key=sizes.__getitem__)
        m = max(sizes)
        self._kp = -(-m // 32) * 32  # the kernel's rows: m padded to its blocks of 32 rows
        Y = torch.as_tensor(self.Y, device=dev)
        A = torch.zeros((k, c, max(m + 1, self._kp)), dtype=torch.float64, device=dev)
        rows = torch.empty((k, m), dtype=torch.int64, device=dev)  # training rows, padded
        for p, f in enumerate(order):
            tr = torch.as_tensor(self.folds[f][0], dtype=torch.int64, device=dev)
            y = Y[tr] - Y[tr].mean(0)
            norm = y.square().sum(0).sqrt()
            A[p, :, : len(tr)] = torch.where(norm > 0, y / norm, 0.0).T
            rows[p] = tr[0]
            rows[p, : len(tr)] = tr
        A[:, :, m] = 1.0
        self._Ab, self._rows, self._m = A.to(getattr(torch, self.dtype.name)), rows, m
        self._groups = []  # (first, stop, training size) of each size's slice of folds
        for nt in sorted(set(sizes)):
            pos = [p for p in range(k) if sizes[order[p]] == nt]
            self._groups.append((pos[0], pos[-1] + 1, nt))
        unsort = np.argsort(order)
        self._unsort = None if order == sorted(order) else torch.as_tensor(unsort, device=dev)
        self.best_r = torch.full((k, c), -np.inf, dtype=torch.float64, device=dev)
        self.best_unit = torch.full((k, c), -1, dtype=torch.int64, device=dev)
        self.best_act = torch.zeros((k, c, self.n), dtype=torch.float64, device=dev)

    def _use_kernel(self, U) -> bool:
        """Whether the fused Triton kernel runs: ``fused``, float32 on CUDA (or in Triton's
        interpreter, for tests), triton importable."""
        import torch

        if not self.fused or U.dtype != torch.float32:
            return False
        if not (U.is_cuda or os.environ.get("TRITON_INTERPRET") == "1"):
            return False
        try:
            from mice2machines import matchkernel  # noqa: F401
        except ImportError:  # pragma: no cover - no triton: plain torch
            return False
        return True

    def _update_torch(self, U, offset: int) -> None:
        """All folds at once. Each fold's training rows are centred, and each unit's scale to
        unit norm found (var_mean: constant units get exactly zero variance and a -1e30
        penalty); then either the fused kernel (product, scale, penalty and max over units,
        no product in memory) or, in blocks of ``max_product``, the scaled rows in one batched
        product with a penalty row, and the max over units."""
        import torch

        k, m, c = len(self.folds), self._m, self.n_cells
        n_units = int(U.shape[1])
        if n_units == 0:
            return
        kernel = self._use_kernel(U)
        n_blocks = 1 if kernel else -(-n_units // max(1, self.max_product // (k * c)))
        step = -(-n_units // n_blocks)  # blocks of even size
        for lo in range(0, n_units, step):
            V = U[:, lo : lo + step]
            rows_z = self._kp if kernel else m + 1
            Z = torch.empty((k, rows_z, V.shape[1]), dtype=V.dtype, device=V.device)
            if kernel:
                scale, pen = torch.empty((2, k, V.shape[1]), dtype=V.dtype, device=V.device)
                Z[:, m:] = 0.0
            for a, b, nt in self._groups:
                Ut = V[self._rows[a:b, :nt]]  # (folds, nt, units): these folds' training rows
                var, mean = torch.var_mean(Ut, dim=1, correction=0, keepdim=True)
                s = torch.where(var > 0, (var * nt).rsqrt(), 0.0)
                p = (var[:, 0] == 0) * -1e30  # constant units never win
                torch.sub(Ut, mean, out=Z[a:b, :nt])
                if nt < m:
                    Z[a:b, nt:m] = 0.0  # meets the zero columns of _Ab
                if kernel:
                    scale[a:b], pen[a:b] = s[:, 0], p
                    continue
                Z[a:b, :nt] *= s
                Z[a:b, m] = p
            if kernel:
                from mice2machines import matchkernel

                try:
                    r, j = matchkernel.rowmax(self._Ab, Z, scale, pen)
                except Exception as err:  # e.g. a Triton that cannot build it: plain torch
                    msg = f"fused matching kernel failed, plain torch instead: {err!r}"
                    warnings.warn(msg, stacklevel=3)
                    self.fused = False  # this accumulator only
                    return self._update_torch(U, offset)  # one block: nothing kept yet
            else:
                r, j = torch.bmm(self._Ab[:, :, : m + 1], Z).max(dim=2)  # (folds, cells)
            if self._unsort is not None:
                r, j = r[self._unsort], j[self._unsort]
            r = r.double()
            better = r > self.best_r
            self.best_r = torch.where(better, r, self.best_r)
            self.best_unit = torch.where(better, j + (offset + lo), self.best_unit)
            cols = V[:, j.reshape(-1)].T.reshape(k, c, self.n).double()  # best units' columns
            self.best_act = torch.where(better[..., None], cols, self.best_act)

    def update(self, chunk) -> None:
        """Add a (stimuli, units) chunk; unit numbers continue from the previous chunks."""
        U = _to_device(chunk, self.device, self.dtype)
        if U.ndim != 2 or U.shape[0] != self.n:
            raise ValueError(f"expected a ({self.n}, units) chunk, got {tuple(U.shape)}")
        offset = self.n_units
        self.n_units += int(U.shape[1])
        if self._cuda:
            self._update_torch(U, offset)
            return
        for f in range(len(self.folds)):
            Ut = U[self._tr[f]]
            mu = Ut.mean(0)
            Uc = Ut - mu
            norm = np.sqrt(np.einsum("ij,ij->j", Uc, Uc))
            # constant units never win; the rounded mean of a nonzero constant leaves a
            # residual (torch's var_mean gives exactly zero), so near-constant ones are
            # tested exactly
            const = norm == 0
            near = np.flatnonzero(norm <= 1e-5 * np.sqrt(len(Ut)) * np.abs(mu))
            const[near] |= (Ut[:, near] == Ut[:1, near]).all(axis=0)
            pen = (const * -1e30)[None].astype(Uc.dtype)
            Z = np.concatenate([Uc / np.where(const, 1, norm).astype(Uc.dtype), pen])
            C = self._A[f] @ Z  # (cells, units): correlations on the training stimuli
            j = np.argmax(C, axis=1)
            r = C[np.arange(self.n_cells), j].astype(np.float64)
            better = r > self.best_r[f]
            self.best_r[f][better] = r[better]
            self.best_unit[f][better] = j[better] + offset
            self.best_act[f][better] = U[:, j[better]].T

    def result(self) -> dict:
        """best_unit, train_r (folds, cells); prediction (stimuli, cells) on held-out stimuli."""
        best_r = _to_numpy(self.best_r)
        best_unit = _to_numpy(self.best_unit)
        act = _to_numpy(self.best_act).astype(np.float64)
        pred = np.full((self.n, self.n_cells), np.nan)
        for f, (tr, te) in enumerate(self.folds):
            u = act[f].T  # (stimuli, cells)
            ut, yt = u[tr] - u[tr].mean(0), self.Y[tr] - self.Y[tr].mean(0)
            var = (ut * ut).sum(0)
            with np.errstate(invalid="ignore", divide="ignore"):
                slope = np.where(var > 0, (ut * yt).sum(0) / var, 0.0)
            pred[te] = self.Y[tr].mean(0) + slope * (u[te] - u[tr].mean(0))
        return {"best_unit": best_unit, "train_r": best_r, "prediction": pred}


def match_units(
    Y,
    units,
    n_folds: int = 5,
    seed: int = 0,
    device: str | None = "cpu",
    dtype=np.float32,
    chunk: int = 65536,
) -> dict:
    """One-to-one matching of neurons Y (stimuli, cells) to units (stimuli, units), streamed.

    Returns MatchAccumulator.result() plus ``r``: each cell's Pearson r between its responses
    and the held-out predictions of its matched units (pooled over folds).
    """
    Y = np.asarray(Y)
    acc = MatchAccumulator(Y, kfold(Y.shape[0], n_folds, seed), device=device, dtype=dtype)
    for lo in range(0, units.shape[1], chunk):
        acc.update(units[:, lo : lo + chunk])
    out = acc.result()
    out["r"] = pearson_rows(out["prediction"].T, acc.Y.T)
    return out
