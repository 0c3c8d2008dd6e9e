"""Cost of the permutation nulls against one plain scoring pass of the same job.

A paper-size job: ResNet50 (random weights: speed does not depend on the values) at 224 px,
all Conv2d layers, 118 images; 1000 cells (cell_metrics_on: all) in 12 groups (all, six
areas, three Cre lines, two E/I classes). The same `compare_model` runs twice per round:
plain (no nulls, n_boot bootstrap resamples) and with nulls (``--n-perm`` permutations for
RSA, CKA and ridge, ``--n-perm-max`` for match and RF-RMSE). Reports wall times, their ratio,
and the job's own per-phase log times summed per phase.

    PYTHONPATH=src python benchmarks/nulls.py --device cuda --out benchmarks/out/nulls.json
    PYTHONPATH=src python benchmarks/nulls.py --device cpu --model resnet18 --size 64 \
        --cells 288 --n-perm 100 --n-perm-max 19
"""

from __future__ import annotations

import argparse
import logging
import re
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
import torchvision
import xarray as xr
from torch import nn

from mice2machines.compare import job, prepare
from mice2machines.models.extract import ExtractSettings, extract

AREAS = ("VISp", "VISl", "VISal", "VISpm", "VISam", "VISrl")
CRE = ("Cux2-CreERT2", "Sst-IRES-Cre", "Vip-IRES-Cre")


class Pre(nn.Module):
    """Grey 0-255 images to the network's 3-channel input."""

    def forward(self, x):
        return (x[:, None].repeat(1, 3, 1, 1) / 255.0 - 0.45) / 0.225


def population(n_cells: int, n_images: int, seed: int = 0) -> xr.Dataset:
    g = np.random.default_rng(seed)
    resp = g.normal(size=(n_cells, n_images, 10)).astype(np.float32)
    cre = np.asarray(CRE)[np.arange(n_cells) % 3]
    return xr.Dataset(
        {"responses": (("cell", "image", "repeat"), resp)},
        coords={
            "cell": np.arange(n_cells),
            "image": np.arange(n_images),
            "experiment_id": ("cell", np.arange(n_cells) // 100),
            "area": ("cell", np.asarray(AREAS)[(np.arange(n_cells) // 7) % 6]),
            "cre_line": ("cell", cre),
            "ei_class": ("cell", np.where(cre == CRE[0], "excitatory", "inhibitory")),
            "imaging_depth": ("cell", np.full(n_cells, 175)),
        },
    )


class PhaseTimes(logging.Handler):
    """Sums the job's per-phase log times: '<what> ... in X s'."""

    def __init__(self):
        super().__init__()
        self.times = defaultdict(float)

    def emit(self, record):
        msg = record.getMessage()
        m = re.search(r": (\w+)(?:,| null| group).* in ([0-9.]+) s$", msg)
        if m and " units in " not in msg:
            phase = (
                "layer results" if " layer " in msg else ("null" if "null of" in msg else "group")
            )
            self.times[f"{m.group(1)} {phase}"] += float(m.group(2))


def run(args) -> dict:
    d = Path(tempfile.mkdtemp(prefix="m2m-nulls-"))
    g = np.random.default_rng(0)
    imgs = g.uniform(0, 255, (118, args.size, args.size)).astype(np.float32)
    model = getattr(torchvision.models, args.model)(weights=None).eval()
    layers = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    store = d / "act.zarr"
    dev = "cuda" if args.device.startswith("cuda") else "cpu"
    extract(model, Pre(), imgs, store, layers, ExtractSettings(device=dev, batch_size=40))
    print(f"extracted {len(layers)} layers", flush=True)
    stim = xr.Dataset({"images": (("image", "y", "x"), imgs)}, coords={"image": np.arange(118)})
    base = {"device": args.device, "cell_metrics_on": "all", "n_boot": args.n_boot}
    base["selection"] = {"embedding": "pca", "per_class": 10**6}
    neural = prepare.prepare_neural(population(args.cells, 118), stim, base)
    cells = np.arange(neural.sizes["cell"])
    runs = {"plain": {**base, "n_perm": 0, "n_perm_max": 0}}
    runs["nulls"] = {**base, "n_perm": args.n_perm, "n_perm_max": args.n_perm_max}
    log = logging.getLogger("mice2machines")
    log.setLevel(logging.INFO)
    out = {"model": args.model, "size": args.size, "layers": len(layers)}
    out.update({"cells": int(len(cells)), "groups": int(neural.sizes["group"])})
    out.update({"device": args.device, "rounds": []})
    if dev == "cuda":
        out["card"] = torch.cuda.get_device_name()
    for r in range(args.rounds):
        row = {}
        for name, cfg in runs.items():
            handler = PhaseTimes()
            log.addHandler(handler)
            t0 = time.perf_counter()
            job.compare_model(store, neural, cells, cfg, model=args.model)
            row[name] = time.perf_counter() - t0
            log.removeHandler(handler)
            row[f"{name}_phases"] = {k: round(v, 2) for k, v in sorted(handler.times.items())}
        row["ratio"] = row["nulls"] / row["plain"]
        print(
            f"round {r}: plain {row['plain']:.1f} s, nulls {row['nulls']:.1f} s, "
            f"ratio {row['ratio']:.2f}",
            flush=True,
        )
        out["rounds"].append(row)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--cells", type=int, default=1000)
    parser.add_argument("--n-perm", type=int, default=1000)
    parser.add_argument("--n-perm-max", type=int, default=100)
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--log", type=Path, help="also write the jobs' log lines here")
    args = parser.parse_args(argv)
    if args.log:
        handler = logging.FileHandler(args.log, mode="w")
        handler.setFormatter(logging.Formatter("%(relativeCreated)d %(message)s"))
        logging.getLogger("mice2machines").addHandler(handler)
    from common import emit

    emit(run(args), args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
