"""One-to-one neuron-to-unit matching, 1000 neurons x 10^6 units, on the GPU.

Same run, same inputs (118 stimuli, float32 units, 5 folds): median time (CUDA events) of

- engine: ``similarity.MatchAccumulator`` over all units in chunks (units already on the
  GPU): per chunk, all folds' unit means and scales, then the fused Triton kernel
  (``matchkernel``: product and max over units); ``engine_torch``: its plain-torch path (one
  batched product of centred scaled rows, then the max); ``engine_old``: the class from
  another copy of similarity.py (``--baseline``), same run; ``*_construct_ms``: building
  the accumulator alone (inside the engine times);
- bound: the fold matrix products alone, (1000 x n_train) @ (n_train x chunk), with
  pre-scaled inputs; the max over units of each product alone (argmax_only); the same as one
  batched product per engine block (bound_batched, argmax_batched); and one full
  (1000 x 118) @ (118 x 10^6) product for reference;
- end to end from host memory: numpy chunks copied to the GPU by the engine (pageable), as the
  workflow feeds it from zarr;

each in fp32 (TF32 off) and with TF32 allowed; plus the peak GPU memory of the engine (units
streamed) against the full correlation matrix, agreement with the CPU engine on a subset and
with the baseline engine on all units, and (``--profile``) the engines' top CUDA kernels.

    git show HEAD:src/mice2machines/similarity.py > benchmarks/out/similarity_old.py
    PYTHONPATH=src python benchmarks/matching.py --baseline benchmarks/out/similarity_old.py
"""

from __future__ import annotations

import argparse
import importlib.util
import platform
import sys
import time

import numpy as np
import torch
from common import cuda_ms, emit

from mice2machines import similarity as sim
from mice2machines.devices import torch_device


def sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def peak_extra_mib(fn):
    """fn's result and the GPU memory it held at its peak beyond what was allocated before."""
    if not torch.cuda.is_available():
        return fn(), 0.0
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    res = fn()
    return res, (torch.cuda.max_memory_allocated() - base) / 2**20


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stimuli", type=int, default=118)
    ap.add_argument("--neurons", type=int, default=1000)
    ap.add_argument("--units", type=int, default=1_000_000)
    ap.add_argument("--chunk", type=int, default=131072)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--json", default=None)
    ap.add_argument("--baseline", default=None, help="another similarity.py to time (engine_old)")
    ap.add_argument("--profile", action="store_true", help="print the engines' top CUDA kernels")
    a = ap.parse_args()
    old = None
    if a.baseline:
        spec = importlib.util.spec_from_file_location("similarity_old", a.baseline)
        old = sys.modules["similarity_old"] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(old)
    dev = "cuda" if torch.cuda.is_available() else "torch:cpu"  # torch:cpu: a smoke run
    g = np.random.default_rng(0)
    n, N, P = a.stimuli, a.neurons, a.units
    planted = g.choice(P, N, replace=False)
    U_host = g.standard_normal((n, P), dtype=np.float32)
    Y = U_host[:, planted] + 0.5 * g.standard_normal((n, N), dtype=np.float32)
    U = torch.from_numpy(U_host).to(torch_device(dev))
    folds = sim.kfold(n, a.folds, seed=0)
    chunks = [(lo, min(lo + a.chunk, P)) for lo in range(0, P, a.chunk)]

    def engine(source, cls=sim.MatchAccumulator):
        acc = cls(Y, folds, device=dev)
        for lo, hi in chunks:
            acc.update(source[:, lo:hi])
        return acc

    class PlainTorch(sim.MatchAccumulator):  # no fused kernel: batched product, then max
        fused = False

    engines = {"engine": sim.MatchAccumulator, "engine_torch": PlainTorch}
    if old is not None:
        engines["engine_old"] = old.MatchAccumulator

    tdev = torch_device(dev)
    A = [torch.randn(N, len(tr), device=tdev) for tr, _ in folds]
    Z = [torch.randn(len(tr), a.chunk, device=tdev) for tr, _ in folds]
    Yfull = torch.randn(N, n, device=tdev)

    def bound():
        for lo, hi in chunks:
            for f in range(len(folds)):
                A[f] @ Z[f][:, : hi - lo]

    C = A[0] @ Z[0]

    def argmax_only():  # the max over units that the engine adds to each product
        for lo, hi in chunks:
            for _ in folds:
                C[:, : hi - lo].max(dim=1)

    # the engine's batched product over the blocks it cuts each chunk into
    k, m = a.folds, max(len(tr) for tr, _ in folds)
    blocks = []
    for lo, hi in chunks:
        nb = -(-(hi - lo) // max(1, sim.MatchAccumulator.max_product // (k * N)))
        step = -(-(hi - lo) // nb)
        blocks += [(b, min(b + step, hi)) for b in range(lo, hi, step)]
    Ab = torch.randn(k, N, m + 1, device=tdev)
    Zb = torch.randn(k, m + 1, max(hi - lo for lo, hi in blocks), device=tdev)
    Cb = Ab @ Zb

    def bound_batched():
        for lo, hi in blocks:
            torch.bmm(Ab, Zb[:, :, : hi - lo])

    def argmax_batched():
        for lo, hi in blocks:
            Cb[:, :, : hi - lo].max(dim=2)

    out = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": platform.node(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
        "torch": torch.__version__,
        "stimuli": n,
        "neurons": N,
        "units": P,
        "folds": a.folds,
        "chunk": a.chunk,
        "engine_blocks": len(blocks),
    }
    for mode in ("fp32", "tf32"):
        torch.backends.cuda.matmul.allow_tf32 = mode == "tf32"
        for rep in range(2):  # twice, alternating, to see the spread
            for name, cls in engines.items():
                t = round(cuda_ms(lambda cls=cls: engine(U, cls), a.reps), 2)
                out[f"{mode}_{name}_ms" + ("_again" if rep else "")] = t
        for name, cls in engines.items():
            t = cuda_ms(lambda cls=cls: cls(Y, folds, device=dev), a.reps)
            out[f"{mode}_{name}_construct_ms"] = round(t, 2)
        out[f"{mode}_bound_ms"] = round(cuda_ms(bound, a.reps), 2)
        out[f"{mode}_argmax_only_ms"] = round(cuda_ms(argmax_only, a.reps), 2)
        out[f"{mode}_bound_batched_ms"] = round(cuda_ms(bound_batched, a.reps), 2)
        out[f"{mode}_argmax_batched_ms"] = round(cuda_ms(argmax_batched, a.reps), 2)
        out[f"{mode}_one_full_matmul_ms"] = round(cuda_ms(lambda: Yfull @ U, a.reps), 2)
        for name in engines:
            out[f"{mode}_{name}_over_bound"] = round(
                out[f"{mode}_{name}_ms"] / out[f"{mode}_bound_ms"], 2
            )
        t0 = time.perf_counter()
        engine(U_host)
        sync()
        out[f"{mode}_from_host_numpy_ms"] = round((time.perf_counter() - t0) * 1e3, 1)
    torch.backends.cuda.matmul.allow_tf32 = False
    res = {}
    for name, cls in engines.items():
        res[name], peak = peak_extra_mib(lambda cls=cls: engine(U, cls).result())
        out[f"{name}_peak_extra_MiB"] = round(peak, 1)
        out[f"{name}_planted_unit_found"] = float((res[name]["best_unit"] == planted[None]).mean())
    out["full_corr_matrix_MiB"] = round(N * P * 4 / 2**20, 1)
    if old is not None:  # the baseline against the new engine on all units (fp32)
        new, ref = res["engine"], res["engine_old"]
        out["old_new_same_best_unit"] = float((new["best_unit"] == ref["best_unit"]).mean())
        out["old_new_max_abs_diff_train_r"] = float(np.abs(new["train_r"] - ref["train_r"]).max())
        diff = np.abs(new["prediction"] - ref["prediction"])
        out["old_new_max_abs_diff_prediction"] = float(np.nanmax(diff))
    if a.profile and torch.cuda.is_available():
        from torch.profiler import ProfilerActivity, profile

        for name, cls in engines.items():
            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                engine(U, cls)
                sync()
            print(f"--- {name}: top CUDA kernels (one run, fp32)")
            print(prof.key_averages().table(sort_by="self_device_time_total", row_limit=12))
    # agreement with the CPU engine on the first 50k units (neurons planted there)
    sub = 50_000
    Ysub = U_host[:, planted % sub] + 0.5 * g.standard_normal((n, N), dtype=np.float32)
    cpu = sim.match_units(Ysub, U_host[:, :sub], n_folds=a.folds, device="cpu", chunk=8192)
    gpu = sim.match_units(Ysub, U_host[:, :sub], n_folds=a.folds, device=dev, chunk=8192)
    out["cpu_gpu_same_best_unit"] = float((cpu["best_unit"] == gpu["best_unit"]).mean())
    out["cpu_gpu_max_abs_diff_r"] = float(np.abs(cpu["r"] - gpu["r"]).max())
    emit(out, a.json)


if __name__ == "__main__":
    main()
