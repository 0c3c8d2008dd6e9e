"""One-to-one neuron-to-unit matching, streamed over chunks of units."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence

import numpy as np

from ..devices import resolve_device, to_device, to_numpy, torch_device, uses_torch
from ..neural.reliability import pearson_rows
from .crossval import kfold


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
    # numpy: units per product cut so that cells x units stays in the cache's range (16 MiB):
    # the product is written and read once, so beyond the cache it is memory-bound
    cpu_block_bytes = 1 << 24

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
        self._cuda = uses_torch(self.device)
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
            self._A.append(to_device(a, self.device, self.dtype))  # (cells, n_tr + 1)
            self._tr.append(to_device(tr, self.device, np.int64))
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

        dev, k, c = torch_device(self.device), len(self.folds), self.n_cells
        sizes = [len(tr) for tr, _ in self.folds]
        order = sorted(range(k), key=sizes.__getitem__)
        m = max(sizes)
        self._kp = -(-m // 32) * 32  # the kernel's rows: m padded to its blocks of 32 rows
        Y = self._Y_d = torch.as_tensor(self.Y, device=dev)
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
            from . import matchkernel  # noqa: F401
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
                from . import matchkernel

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
        U = to_device(chunk, self.device, self.dtype)
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
            step = max(64, self.cpu_block_bytes // (Z.itemsize * self.n_cells))
            for lo in range(0, Z.shape[1], step):
                self._update_cpu(f, self._A[f] @ Z[:, lo : lo + step], U, offset + lo, lo)

    def _update_cpu(self, f: int, C, U, first: int, lo: int) -> None:
        """Fold f's best units from C (cells, units): its correlations on the training
        stimuli with the units numbered from ``first`` (columns ``lo`` on of chunk U)."""
        j = np.argmax(C, axis=1)
        r = C[np.arange(self.n_cells), j].astype(np.float64)
        better = r > self.best_r[f]
        self.best_r[f][better] = r[better]
        self.best_unit[f][better] = j[better] + first
        self.best_act[f][better] = U[:, lo + j[better]].T

    @property
    def responses(self):
        """The responses (stimuli, cells) float64 where the accumulator computes: numpy, or a
        torch tensor on its device."""
        return self._Y_d if self._cuda else self.Y

    def predictions(self):
        """(stimuli, cells) held-out predictions, where the accumulator computes: each fold's
        best unit mapped by least squares on the fold's training stimuli."""
        if self._cuda:
            import torch

            xp, dev = torch, self._Y_d.device

            def index(i):
                return torch.as_tensor(i, dtype=torch.int64, device=dev)

            pred = torch.full((self.n, self.n_cells), float("nan"), dtype=torch.float64, device=dev)
        else:
            xp, pred = np, np.full((self.n, self.n_cells), np.nan)

            def index(i):
                return i

        Y = self.responses
        with np.errstate(invalid="ignore", divide="ignore"):
            for f, (tr, te) in enumerate(self.folds):
                tr, te = index(tr), index(te)
                u = self.best_act[f].T  # (stimuli, cells)
                u_mean, y_mean = u[tr].mean(0), Y[tr].mean(0)
                ut, yt = u[tr] - u_mean, Y[tr] - y_mean
                var = (ut * ut).sum(0)
                slope = xp.where(var > 0, (ut * yt).sum(0) / var, 0.0)
                pred[te] = y_mean + slope * (u[te] - u_mean)
        return pred

    def result(self) -> dict:
        """best_unit, train_r (folds, cells); prediction (stimuli, cells) on held-out stimuli."""
        return {
            "best_unit": to_numpy(self.best_unit),
            "train_r": to_numpy(self.best_r),
            "prediction": to_numpy(self.predictions()),
        }


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
