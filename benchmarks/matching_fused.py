"""Block sizes of the fused matching kernel (``matchkernel.rowmax``) against cuBLAS + max.

At the matching benchmark's shape (5 folds, 1000 cells, 118 stimuli: 95 training rows, 10^6
units in chunks of 131,072), fp32 (TF32 off) and with TF32 allowed, CUDA events, median of 7:

- ``bmm_max``: the plain-torch path's core, a batched product of scaled rows and the max;
- ``bmm_only``: that product alone (the batched matmul bound);
- ``fused_<BMxBNxBKxwarpsxstages>``: the kernel with those blocks, and whether it picks the
  units of ``rowmax_reference`` (ties aside).

    PYTHONPATH=src python benchmarks/matching_fused.py [--json out.json]
"""

from __future__ import annotations

import argparse

import torch
import triton
from common import cuda_ms, emit

from mice2machines.compare import matchkernel as mk

CONFIGS = [
    (64, 128, 32, 4, 3),
    (128, 128, 32, 8, 3),
    (64, 256, 32, 8, 3),
    (256, 128, 32, 8, 3),
    (128, 256, 32, 8, 3),
]

REPS = 7  # CUDA-event timings per median


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--neurons", type=int, default=1000)
    ap.add_argument("--stimuli", type=int, default=118)
    ap.add_argument("--units", type=int, default=1_000_000)
    ap.add_argument("--chunk", type=int, default=131072)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--rows", type=int, default=95)  # training rows of the largest fold
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    dev, k, M, m = "cuda", a.folds, a.neurons, a.rows
    K = -(-m // 32) * 32  # the engine pads the kernel's rows to blocks of 32
    g = torch.Generator(device=dev).manual_seed(0)
    A = torch.randn(k, M, max(m + 1, K), device=dev, generator=g)
    A /= A.norm(dim=2, keepdim=True)
    Z = torch.randn(k, max(m + 1, K), a.chunk, device=dev, generator=g)  # the engine's layout
    scale = torch.rand(2, k, a.chunk, device=dev, generator=g) / K**0.5
    scale, pen = scale[0], torch.where(scale[1] < 0.01, -1e30, 0.0)
    chunks = [(lo, min(lo + a.chunk, a.units)) for lo in range(0, a.units, a.chunk)]
    A1, Z1 = A[:, :, : m + 1], Z[:, : m + 1]  # the plain-torch path's shapes

    def fused(cfg):
        for lo, hi in chunks:
            n = hi - lo
            mk.rowmax(A, Z[:, :, :n], scale[:, :n], pen[:, :n], K=K, config=cfg)

    out = {"gpu": torch.cuda.get_device_name(0), "triton": triton.__version__}
    for mode in ("fp32", "tf32"):
        torch.backends.cuda.matmul.allow_tf32 = mode == "tf32"
        out[f"{mode}_default_config"] = "x".join(map(str, mk.CONFIG[mode.replace("fp32", "ieee")]))
        ms = cuda_ms(
            lambda: [torch.bmm(A1, Z1[:, :, : hi - lo]).max(dim=2) for lo, hi in chunks], REPS
        )
        out[f"{mode}_bmm_max_ms"] = round(ms, 2)
        ms = cuda_ms(lambda: [torch.bmm(A1, Z1[:, :, : hi - lo]) for lo, hi in chunks], REPS)
        out[f"{mode}_bmm_only_ms"] = round(ms, 2)
        r0, j0 = mk.rowmax_reference(A, Z[:, :K], scale, pen)
        for cfg in CONFIGS:
            key = f"{mode}_fused_{'x'.join(map(str, cfg))}"
            try:
                r, j = mk.rowmax(A, Z, scale, pen, K=K, config=cfg)
                out[key + "_same_unit"] = round(float((j == j0).float().mean()), 5)
                out[key + "_max_abs_diff_r"] = float((r - r0).abs().max())
                out[key + "_ms"] = round(cuda_ms(lambda cfg=cfg: fused(cfg), REPS), 2)
            except Exception as err:  # a sweep: report and go on
                out[key + "_error"] = repr(err)[:300]
    emit(out, a.json)


if __name__ == "__main__":
    main()
