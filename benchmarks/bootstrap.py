"""The image bootstrap of the representation metrics: the former per-resample loop against
the vectorised blocks, at a paper-like shape (G groups, L layers, n images, n_boot).

Random features (speed does not depend on the values); every metric's resamples checked
equal to the loop's (max |difference| reported). Times per layer = total / L.

    PYTHONPATH=src python benchmarks/bootstrap.py --device cpu
    PYTHONPATH=src python benchmarks/bootstrap.py --device cuda --layers 53
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from mice2machines.compare import bootstrap as B

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_bootstrap import loop_representation  # noqa: E402  (the reference the tests use)

from mice2machines.compare.gram import Representations

METRICS = ("rsa_spearman", "rsa_pearson", "cka_unbiased", "cka_biased")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--groups", type=int, default=12)
    ap.add_argument("--layers", type=int, default=10)
    ap.add_argument("--images", type=int, default=118)
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out")
    a = ap.parse_args()
    g = np.random.default_rng(0)
    n = a.images
    neural = Representations.from_arrays(
        [g.normal(size=(n, 80)) for _ in range(a.groups)], dtype=np.float64
    )
    model = Representations.from_arrays(
        [g.normal(size=(n, 300)) for _ in range(a.layers)], dtype=np.float64
    )
    idx = B.bootstrap_indices(n, a.n_boot, seed=0)
    rows = {}
    for m in METRICS:
        t0 = time.perf_counter()
        want = loop_representation(neural, model, m, idx)
        t_loop = time.perf_counter() - t0
        t0 = time.perf_counter()
        got = B.bootstrap_representation(neural, model, [m], idx, device=a.device)[m]
        t_vec = time.perf_counter() - t0
        diff = float(np.nanmax(np.abs(got - want)))
        rows[m] = {
            "loop_s_per_layer": t_loop / a.layers,
            "vectorised_s_per_layer": t_vec / a.layers,
            "speedup": t_loop / t_vec,
            "max_abs_diff": diff,
        }
        print(
            f"{m:14s} loop {t_loop / a.layers:7.3f} s/layer  vectorised "
            f"{t_vec / a.layers:7.3f} s/layer  x{t_loop / t_vec:5.1f}  max|diff| {diff:.1e}",
            flush=True,
        )
    if a.out:
        with open(a.out, "w") as f:
            json.dump({"args": vars(a), "metrics": rows}, f, indent=2)


if __name__ == "__main__":
    main()
