"""All RDMs + RSA for many neural groups x model layers: our engine vs rsatoolbox.

Same run, same inputs (float32 arrays, 118 stimuli): G neural groups and L layers of
geometrically spaced widths. Three timings (bound and engine alternate, --reps times each;
rsatoolbox --reps // 2 times; medians; ``engine_over_bound`` is the median of paired ratios;
each timing starts after a short rest, SETTLE_S):

- rsatoolbox: ``calc_rdm(Dataset, method="correlation")`` for every array, then
  ``compare(groups, layers, method="spearman")`` and ``"corr"`` (its input: the same values as
  float64, which it needs for exact numbers; the cast is not timed);
- engine: ``similarity.Representations.from_arrays`` (streamed Gram statistics, one float32
  matrix product per block of units) + ``rsa_table`` (Spearman and Pearson);
- bound: the float32 matrix products alone (``Xc @ Xc.T`` of every column-centred array, the
  centring untimed), i.e. the same work with nothing else.

Also: the largest absolute difference from rsatoolbox of the RDMs and of both RSA tables, and
the peak memory the engine adds (tracemalloc) against the size of the inputs.

    PYTHONPATH=src python benchmarks/rsa.py [--groups 12 --layers 30 --max-units 300000]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
import tracemalloc

import numpy as np
from common import emit

from mice2machines import similarity as sim

#: seconds of rest before each timing: OpenBLAS's threads spin for ~0.1 s after a threaded
#: call, taking a core from whatever is timed next (here: the engine, after the bound)
SETTLE_S = 0.3


def timed(fn, reps: int) -> tuple[float, object]:
    out, result = [], None
    for _ in range(reps):
        time.sleep(SETTLE_S)
        t0 = time.perf_counter()
        result = fn()
        out.append(time.perf_counter() - t0)
    return statistics.median(out), result


def make_inputs(n, groups, layers, max_cells, max_units, seed=0):
    g = np.random.default_rng(seed)
    cells = np.geomspace(50, max_cells, groups).astype(int)
    units = np.geomspace(1000, max_units, layers).astype(int)
    latent = g.normal(size=(n, 20))

    def make(p, k):  # ReLU features of a shared latent + noise
        x = latent[:, :k] @ g.normal(size=(k, p)) + g.normal(size=(n, p))
        return np.maximum(x, 0).astype(np.float32)

    return [make(int(c), 10) for c in cells], [make(int(u), 20) for u in units]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stimuli", type=int, default=118)
    ap.add_argument("--groups", type=int, default=12)
    ap.add_argument("--layers", type=int, default=30)
    ap.add_argument("--max-cells", type=int, default=3000)
    ap.add_argument("--max-units", type=int, default=300_000)
    ap.add_argument("--chunk", type=int, default=65536)
    ap.add_argument("--reps", type=int, default=9)
    ap.add_argument("--threads", type=int, default=None, help="BLAS threads (threadpoolctl)")
    ap.add_argument("--json", default=None, help="also write the results here")
    a = ap.parse_args()
    if a.threads:
        from threadpoolctl import threadpool_limits

        threadpool_limits(a.threads)

    from rsatoolbox.data import Dataset
    from rsatoolbox.rdm import calc_rdm, compare

    neural, layers = make_inputs(a.stimuli, a.groups, a.layers, a.max_cells, a.max_units)
    arrays = neural + layers
    in_bytes = sum(x.nbytes for x in arrays)
    as64 = [x.astype(np.float64) for x in arrays]

    def rsatoolbox_all():
        rdms_n = calc_rdm([Dataset(x) for x in as64[: len(neural)]], method="correlation")
        rdms_l = calc_rdm([Dataset(x) for x in as64[len(neural) :]], method="correlation")
        return (
            rdms_n,
            rdms_l,
            compare(rdms_n, rdms_l, method="spearman"),
            compare(rdms_n, rdms_l, method="corr"),
        )

    def engine_all():
        rn = sim.Representations.from_arrays(neural, chunk=a.chunk)
        rl = sim.Representations.from_arrays(layers, chunk=a.chunk)
        return rn, rl, sim.rsa_table(rn, rl, ("spearman", "pearson"))

    centred = [x - x.mean(0) for x in arrays]

    def bound():
        return [xc @ xc.T for xc in centred]

    # bound and engine alternate, so both see the same machine state; medians of each
    t_b, t_e, result = [], [], None
    for _ in range(a.reps):
        t_b.append(timed(bound, 1)[0])
        t, result = timed(engine_all, 1)
        t_e.append(t)
    t_bound, t_engine = statistics.median(t_b), statistics.median(t_e)
    ratios = sorted(e / b for e, b in zip(t_e, t_b, strict=True))
    ratio = statistics.median(ratios)
    rn, rl, table = result
    t_rsa, (ref_n, ref_l, ref_sp, ref_pe) = timed(rsatoolbox_all, max(1, a.reps // 2))
    tracemalloc.start()
    engine_all()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()

    ours = np.concatenate([sim.upper_tri(rn.rdms), sim.upper_tri(rl.rdms)])
    theirs = np.concatenate([ref_n.get_vectors(), ref_l.get_vectors()])
    out = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.node()} {platform.processor() or platform.machine()}",
        "cpus": os.cpu_count(),
        "blas_threads": a.threads or "default",
        "load_average_1min_at_end": round(os.getloadavg()[0], 2),
        "stimuli": a.stimuli,
        "groups": a.groups,
        "layers": a.layers,
        "cells_total": int(sum(x.shape[1] for x in neural)),
        "units_total": int(sum(x.shape[1] for x in layers)),
        "input_MiB": round(in_bytes / 2**20, 1),
        "rsatoolbox_s": round(t_rsa, 3),
        "engine_s": round(t_engine, 3),
        "matmul_bound_s": round(t_bound, 3),
        "speedup_vs_rsatoolbox": round(t_rsa / t_engine, 1),
        "engine_over_bound": round(ratio, 2),
        "engine_over_bound_paired_min_max": [round(ratios[0], 2), round(ratios[-1], 2)],
        "max_abs_diff_rdm": float(np.abs(ours - theirs).max()),
        "max_abs_diff_rsa_spearman": float(np.abs(table["spearman"] - ref_sp).max()),
        "max_abs_diff_rsa_pearson": float(np.abs(table["pearson"] - ref_pe).max()),
        "engine_peak_MiB": round(peak / 2**20, 1),
    }
    emit(out, a.json)


if __name__ == "__main__":
    main()
