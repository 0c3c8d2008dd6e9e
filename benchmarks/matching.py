"""One-to-one neuron-to-unit matching, 1000 neurons x 10^6 units, on the GPU (issue 4).

Same run, same inputs (118 stimuli, float32 units, 5 folds): median time (CUDA events) of

- engine: ``similarity.MatchAccumulator`` over all units in chunks (units already on the
  GPU), per fold: centre/scale the chunk's training rows, one matrix product, max over units;
- bound: the fold matrix products alone, (1000 x n_train) @ (n_train x chunk), with
  pre-scaled inputs; the max over units of each product alone (argmax_only); and one full
  (1000 x 118) @ (118 x 10^6) product for reference;
- end to end from host memory: numpy chunks copied to the GPU by the engine (pageable), as the
  workflow feeds it from zarr;

each in fp32 (TF32 off) and with TF32 allowed; plus the peak GPU memory of the engine (units
streamed) against the full correlation matrix, and agreement with the CPU engine on a subset.

    PYTHONPATH=src python benchmarks/matching.py [--neurons 1000 --units 1000000]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import numpy as np
import torch

from mice2machines import similarity as sim


def cuda_ms(fn, reps: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        out.append(start.elapsed_time(end))
    return statistics.median(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stimuli", type=int, default=118)
    ap.add_argument("--neurons", type=int, default=1000)
    ap.add_argument("--units", type=int, default=1_000_000)
    ap.add_argument("--chunk", type=int, default=131072)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    dev = "cuda"
    g = np.random.default_rng(0)
    n, N, P = a.stimuli, a.neurons, a.units
    planted = g.choice(P, N, replace=False)
    U_host = g.standard_normal((n, P), dtype=np.float32)
    Y = U_host[:, planted] + 0.5 * g.standard_normal((n, N), dtype=np.float32)
    U = torch.from_numpy(U_host).to(dev)
    folds = sim.kfold(n, a.folds, seed=0)
    chunks = [(lo, min(lo + a.chunk, P)) for lo in range(0, P, a.chunk)]

    def engine(source):
        acc = sim.MatchAccumulator(Y, folds, device=dev)
        for lo, hi in chunks:
            acc.update(source[:, lo:hi])
        return acc

    A = [torch.randn(N, len(tr), device=dev) for tr, _ in folds]
    Z = [torch.randn(len(tr), a.chunk, device=dev) for tr, _ in folds]
    Yfull = torch.randn(N, n, device=dev)

    def bound():
        for lo, hi in chunks:
            for f in range(len(folds)):
                A[f] @ Z[f][:, : hi - lo]

    C = A[0] @ Z[0]

    def argmax_only():  # the max over units that the engine adds to each product
        for lo, hi in chunks:
            for _ in folds:
                C[:, : hi - lo].max(dim=1)

    out = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": platform.node(),
        "gpu": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "stimuli": n,
        "neurons": N,
        "units": P,
        "folds": a.folds,
        "chunk": a.chunk,
    }
    for mode in ("fp32", "tf32"):
        torch.backends.cuda.matmul.allow_tf32 = mode == "tf32"
        out[f"{mode}_engine_ms"] = round(cuda_ms(lambda: engine(U), a.reps), 2)
        out[f"{mode}_bound_ms"] = round(cuda_ms(bound, a.reps), 2)
        out[f"{mode}_argmax_only_ms"] = round(cuda_ms(argmax_only, a.reps), 2)
        out[f"{mode}_one_full_matmul_ms"] = round(cuda_ms(lambda: Yfull @ U, a.reps), 2)
        out[f"{mode}_engine_over_bound"] = round(
            out[f"{mode}_engine_ms"] / out[f"{mode}_bound_ms"], 2
        )
        t0 = time.perf_counter()
        engine(U_host)
        torch.cuda.synchronize()
        out[f"{mode}_from_host_numpy_ms"] = round((time.perf_counter() - t0) * 1e3, 1)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    res = engine(U).result()
    out["engine_peak_extra_MiB"] = round((torch.cuda.max_memory_allocated() - base) / 2**20, 1)
    out["full_corr_matrix_MiB"] = round(N * P * 4 / 2**20, 1)
    out["planted_unit_found"] = float((res["best_unit"] == planted[None]).mean())
    # agreement with the CPU engine on the first 50k units (neurons planted there)
    sub = 50_000
    Ysub = U_host[:, planted % sub] + 0.5 * g.standard_normal((n, N), dtype=np.float32)
    cpu = sim.match_units(Ysub, U_host[:, :sub], n_folds=a.folds, device="cpu", chunk=8192)
    gpu = sim.match_units(Ysub, U_host[:, :sub], n_folds=a.folds, device=dev, chunk=8192)
    out["cpu_gpu_same_best_unit"] = float((cpu["best_unit"] == gpu["best_unit"]).mean())
    out["cpu_gpu_max_abs_diff_r"] = float(np.abs(cpu["r"] - gpu["r"]).max())
    print(json.dumps(out, indent=1))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
