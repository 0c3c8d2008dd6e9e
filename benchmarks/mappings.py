"""The mapping metrics per layer: ridge, PLS, and the sparse random projection before them,
at a paper-size shape (ResNet50 layer widths at 224 px, 118 images, 1000 cells), in one run.

Per layer width: the plain pass (the layer's Gram, streamed in chunks as the job streams
it), the projection of the same chunks (scikit-learn's matrix, on the host), and each
mapping's fit with its null (ridge: n_perm permutations, each refitted with alpha re-chosen;
PLS: n_perm_max permutations, each a whole PLS2 fit of every cell). Random activations and
responses (speed does not depend on the values).

    PYTHONPATH=src python benchmarks/mappings.py --device cpu --widths 20000 --cells 100
    PYTHONPATH=src python benchmarks/mappings.py --device cuda
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from common import emit

from mice2machines.compare import crossval, inference, pls, projection, ridge
from mice2machines.compare.gram import GramAccumulator

#: output widths of ResNet50's stages at 224 px (stem, layer1..4, pooled)
WIDTHS = (802816, 401408, 200704, 100352, 2048)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--widths", type=int, nargs="+", default=list(WIDTHS))
    ap.add_argument("--images", type=int, default=118)
    ap.add_argument("--cells", type=int, default=1000)
    ap.add_argument("--n-perm", type=int, default=1000)
    ap.add_argument("--n-perm-max", type=int, default=100)
    ap.add_argument("--components", type=int, default=25)
    ap.add_argument("--chunk", type=int, default=65536)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out")
    a = ap.parse_args()
    g = np.random.default_rng(0)
    n = a.images
    Y = g.normal(size=(n, a.cells))
    folds = crossval.kfold(n, 5, 0)
    perms = inference.permutations(n, max(a.n_perm, a.n_perm_max), 0)
    rows = {}
    for width in a.widths:
        X = g.normal(size=(n, width)).astype(np.float32)
        t0 = time.perf_counter()
        acc = GramAccumulator(n, device=a.device, dtype=np.float32)
        for lo in range(0, width, a.chunk):
            acc.update(X[:, lo : lo + a.chunk])
        K = acc.gram()
        t_gram = time.perf_counter() - t0
        t0 = time.perf_counter()
        proj = projection.Projector(n, width, 0.1, None, seed=0)
        t_draw = time.perf_counter() - t0
        t0 = time.perf_counter()
        for lo in range(0, width, a.chunk):
            proj.update(X[:, lo : lo + a.chunk])
        Kp = proj.gram() if proj.active else K
        t_proj = time.perf_counter() - t0
        row = {"units": width, "projected_to": proj.dim, "gram_s": t_gram}
        row |= {"projection_draw_s": t_draw, "projection_apply_s": t_proj}
        for name, fn, P in (
            ("ridge", lambda K, p: ridge.ridge_fold_scores(
                K, Y, ridge.RELATIVE_ALPHAS, folds, p, device=a.device), a.n_perm),
            ("pls", lambda K, p: pls.pls_fold_scores(
                K, Y, a.components, folds, p, device=a.device), a.n_perm_max),
        ):  # fmt: skip
            fn(K, None)  # warm-up (CUDA context, kernels)
            for label, gram, p in (
                ("fit", K, None),
                ("null", K, perms[:P]),
                ("projected", Kp, None),
            ):
                _sync(a.device)
                t0 = time.perf_counter()
                fn(gram, p)
                _sync(a.device)
                row[f"{name}_{label}_s"] = time.perf_counter() - t0
        row["pls_over_ridge_fit"] = row["pls_fit_s"] / row["ridge_fit_s"]
        row["pls_over_ridge_null"] = row["pls_null_s"] / row["ridge_null_s"]
        rows[str(width)] = row
        print(row, flush=True)
    emit(
        {
            "device": a.device,
            "images": n,
            "cells": a.cells,
            "n_perm": a.n_perm,
            "n_perm_max": a.n_perm_max,
            "components": a.components,
            "layers": rows,
        },
        a.out,
    )


if __name__ == "__main__":
    main()
