"""Fused Triton kernel for one-to-one matching: batched matrix product and max over units.

``rowmax(A, Z, scale, pen)`` returns, for every fold f and cell c, the max over units u of
``(A[f, c, :K] @ Z[f, :, u]) * scale[f, u] + pen[f, u]`` and the first unit that reaches it,
without writing the (folds, cells, units) product to memory: the product and the max over
units are what bound ``similarity.MatchAccumulator`` on a GPU. ``rowmax_reference`` is the
same in plain torch (tests; any device).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

# (BLOCK_M cells, BLOCK_N units, BLOCK_K rows, warps, stages), from a sweep on an H100
CONFIG = {"ieee": (64, 128, 32, 4, 3), "tf32": (256, 128, 32, 8, 3)}


@triton.jit
def _rowmax_kernel(
    A, Z, SCALE, PEN, R, J,
    M, N,
    s_af, s_am, s_ak, s_zf, s_zk, s_zu, s_sf, s_su, s_of, s_om, s_ot,
    K: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
    PREC: tl.constexpr,
):  # fmt: skip
    pm, pn, f = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    rm = pm * BM + tl.arange(0, BM)
    rn = pn * BN + tl.arange(0, BN)
    rk = tl.arange(0, BK)
    in_n = rn < N
    acc = tl.zeros((BM, BN), dtype=tl.float32)
    for k0 in range(0, K, BK):
        kk = k0 + rk
        a = tl.load(
            A + f * s_af + rm[:, None] * s_am + kk[None, :] * s_ak,
            mask=(rm[:, None] < M) & (kk[None, :] < K),
            other=0.0,
        )
        z = tl.load(
            Z + f * s_zf + kk[:, None] * s_zk + rn[None, :] * s_zu,
            mask=(kk[:, None] < K) & in_n[None, :],
            other=0.0,
        )
        acc = tl.dot(a, z, acc, input_precision=PREC)
    scale = tl.load(SCALE + f * s_sf + rn * s_su, mask=in_n, other=0.0)
    pen = tl.load(PEN + f * s_sf + rn * s_su, mask=in_n, other=float("-inf"))
    acc = acc * scale[None, :] + pen[None, :]
    best, at = tl.max(acc, axis=1, return_indices=True, return_indices_tie_break_left=True)
    out = f * s_of + rm * s_om + pn * s_ot
    tl.store(R + out, best, mask=rm < M)
    tl.store(J + out, at + pn * BN, mask=rm < M)


def rowmax(A, Z, scale, pen, K: int | None = None, config=None):
    """(max, first argmax) over units, (folds, cells) each, of the scaled fold products above.

    A (folds, cells, >= K), Z (folds, K, units), scale and pen (folds, units), float32; scale
    and pen share strides. Matrix precision follows ``torch.backends.cuda.matmul.allow_tf32``.
    """
    k, M = A.shape[:2]
    K = Z.shape[1] if K is None else K
    N = Z.shape[2]
    prec = "tf32" if torch.backends.cuda.matmul.allow_tf32 else "ieee"
    BM, BN, BK, warps, stages = config or CONFIG[prec]
    T = triton.cdiv(N, BN)
    R = torch.empty((k, M, T), device=Z.device, dtype=torch.float32)
    J = torch.empty((k, M, T), device=Z.device, dtype=torch.int32)
    _rowmax_kernel[(triton.cdiv(M, BM), T, k)](
        A, Z, scale, pen, R, J, M, N,
        A.stride(0), A.stride(1), A.stride(2), Z.stride(0), Z.stride(1), Z.stride(2),
        scale.stride(0), scale.stride(1), R.stride(0), R.stride(1), R.stride(2),
        K=K, BM=BM, BN=BN, BK=BK, PREC=prec, num_warps=warps, num_stages=stages,
    )  # fmt: skip
    r, t = R.max(dim=2)  # the first tile that holds the max: ties go to the lower unit
    return r, J.gather(2, t[..., None])[..., 0].long()


def rowmax_reference(A, Z, scale, pen, K: int | None = None):
    """``rowmax`` in plain torch, through the full (folds, cells, units) product."""
    K = Z.shape[1] if K is None else K
    C = torch.bmm(A[:, :, :K], Z) * scale[:, None] + pen[:, None]
    return C.max(dim=2)
