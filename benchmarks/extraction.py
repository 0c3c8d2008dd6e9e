"""Activation extraction against its floor, meant for the GPU machine.

For each model (random weights: speed does not depend on the values) and precision, all
Conv2d layers of ``--images`` stimuli at full Allen size (918 x 1174, resized on the GPU):

- wall time of ``mice2machines.models.extract.extract`` (probe, preflight, store creation,
  forward, host copies, zarr writes, rename), and the same plus ``os.sync()``;
- its floor, measured in the same run: max(bare forward of the same model over the same
  batches, bytes written / the disk's sequential write rate with fsync);
- the zarr write rate (same chunking, data already in host memory) against that disk rate;
- bf16 against fp32: relative L2 error per layer on the first 16 images.

    PYTHONPATH=src python benchmarks/extraction.py --out benchmarks/out/extract
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from mice2machines.models import extract as A
from mice2machines.models import hooks as H
from mice2machines.models import store as St
from mice2machines.models import zoo
from mice2machines.models.preprocess import make_preprocess


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def disk_write_rate(path: Path, gb: float, block_mb: int = 64) -> dict:
    """Sequential write of ``gb`` GiB in ``block_mb`` blocks: buffered and with fsync (B/s)."""
    block = os.urandom(block_mb << 20)
    n = max(1, int(gb * 1024 / block_mb))
    t0 = time.perf_counter()
    with open(path, "wb") as f:
        for _ in range(n):
            f.write(block)
        t1 = time.perf_counter()
        f.flush()
        os.fsync(f.fileno())
    t2 = time.perf_counter()
    path.unlink()
    total = n * len(block)
    return {"bytes": total, "buffered_Bps": total / (t1 - t0), "fsync_Bps": total / (t2 - t0)}


def zarr_write_rate(path: Path, gb: float, writers: int, chunk_mb: float) -> dict:
    """Write ``gb`` GiB of float32 into a zarr array chunked like a conv layer, the way
    extraction does (``_ChunkFiles`` from a thread pool), from host memory."""
    import zarr

    shape = (16, 128, 112, 112)  # one batch slab: 16 images x 128 channels x 112 x 112
    slab = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
    n_slabs = max(1, int(gb * 2**30 / slab.nbytes))
    arr = zarr.create_array(
        str(path), shape=(16 * n_slabs, *shape[1:]), chunks=St._chunks(shape[1:], 16, 4, chunk_mb),
        dtype="float32", compressors=None, fill_value=np.nan,
    )  # fmt: skip
    files = St._ChunkFiles(arr)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(writers) as pool:
        jobs = [pool.submit(job) for i in range(n_slabs) for job in files.tasks(16 * i, slab)]
        for f in jobs:
            f.result()
    t1 = time.perf_counter()
    os.sync()
    t2 = time.perf_counter()
    total = n_slabs * slab.nbytes
    shutil.rmtree(path)
    return {"bytes": total, "buffered_Bps": total / (t1 - t0), "synced_Bps": total / (t2 - t0),
            "writers": writers, "chunk_mb": chunk_mb}  # fmt: skip


def bare_forward(model, x_batches, precision, device, reps=5) -> float:
    """Median seconds of the model alone over the preprocessed batches (already on the GPU)."""
    times = []
    with torch.inference_mode():
        for _ in range(reps + 2):
            torch.cuda.synchronize(device) if device.type == "cuda" else None
            t0 = time.perf_counter()
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
                for x in x_batches:
                    model(x)
            torch.cuda.synchronize(device) if device.type == "cuda" else None
            times.append(time.perf_counter() - t0)
    return statistics.median(times[2:])


def rel_errors(a: Path, b: Path, n: int = 16) -> list[float]:
    """Per-layer ||a - b|| / ||b|| on the first ``n`` images (b is the fp32 reference)."""
    import zarr

    ga, gb = zarr.open_group(str(a), mode="r"), zarr.open_group(str(b), mode="r")
    out = []
    for name in gb.group_keys():
        x = np.asarray(ga[f"{name}/activations"][:n], dtype=np.float64)
        y = np.asarray(gb[f"{name}/activations"][:n], dtype=np.float64)
        out.append(float(np.linalg.norm(x - y) / max(np.linalg.norm(y), 1e-30)))
    return out


def run_extraction(
    model, pre, images, path, layers, batch, precision, chunk_mb, writers, bare, disk
):
    """One timed extraction; wall time with and without a final sync, against the floor."""
    shutil.rmtree(path, ignore_errors=True)
    settings = A.ExtractSettings(
        batch_size=batch, precision=precision, writers=writers, chunk_mb=chunk_mb,
        max_store_gb=64, max_memory_gb=32,
    )  # fmt: skip
    os.sync()
    t0 = time.perf_counter()
    ex = A.extract(model, pre, images, path, layers, settings)
    wall = time.perf_counter() - t0
    os.sync()
    wall_sync = time.perf_counter() - t0
    nbytes = dir_bytes(path)
    floor = max(bare, nbytes / disk["fsync_Bps"])
    return {
        "model": path.name.split("_")[0], "precision": precision, "chunk_mb": chunk_mb,
        "writers": writers, "layers": int(ex.table["stored"].sum()), "bytes": nbytes,
        "bare_forward_s": bare, "wall_s": wall, "wall_sync_s": wall_sync, "floor_s": floor,
        "ratio": wall / floor, "ratio_sync": wall_sync / floor, "timings": ex.timings,
        "batch": ex.estimates["batch_size"],
    }  # fmt: skip


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=["resnet50", "vgg19"])
    ap.add_argument("--images", type=int, default=118)
    ap.add_argument("--height", type=int, default=918)
    ap.add_argument("--width", type=int, default=1174)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--writers", type=int, nargs="+", default=[8, 16])
    ap.add_argument("--chunk-mb", type=float, nargs="+", default=[16.0, 64.0])
    ap.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    ap.add_argument("--disk-gb", type=float, default=8.0)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/out/extract"))
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    args.out.mkdir(parents=True, exist_ok=True)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    info = {
        "device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "cpus": os.cpu_count(),
        "date": time.strftime("%Y-%m-%d"),
    }
    print(json.dumps(info), flush=True)
    disk = disk_write_rate(args.out / "disk.bin", args.disk_gb)
    print(f"disk: {disk['fsync_Bps'] / 1e9:.2f} GB/s with fsync, "
          f"{disk['buffered_Bps'] / 1e9:.2f} buffered", flush=True)  # fmt: skip
    zrates = []
    for chunk_mb in args.chunk_mb:
        for writers in args.writers:
            z = zarr_write_rate(
                args.out / "zarr_rate.zarr", min(args.disk_gb, 4.0), writers, chunk_mb
            )
            zrates.append(z)
            print(f"zarr chunks {chunk_mb:g} MB, {writers} writers: {z['synced_Bps'] / 1e9:.2f} "
                  f"GB/s synced, {z['buffered_Bps'] / 1e9:.2f} buffered", flush=True)  # fmt: skip
    images = np.random.default_rng(0).uniform(0, 255, (args.images, args.height, args.width))
    images = images.astype(np.float32)
    rows = []
    for arch in args.models:
        spec = zoo.ModelSpec(
            arch, f"torchvision:{arch}", "random", args.size, layers="types:Conv2d"
        )
        model = zoo.build_model(spec).to(device)
        pre = make_preprocess(spec).to(device)
        layers = H.select_layers(model, "types", ["Conv2d"])
        with torch.inference_mode():
            xb = [
                pre(torch.from_numpy(images[a : a + args.batch]).to(device))
                for a in range(0, args.images, args.batch)
            ]
        stores = {}
        for precision in args.precisions:
            bare = bare_forward(model, xb, precision, device)
            for chunk_mb in args.chunk_mb:
                for writers in args.writers:
                    path = args.out / f"{arch}_{precision}_{chunk_mb:g}_{writers}.zarr"
                    row = run_extraction(model, pre, images, path, layers, args.batch, precision,
                                         chunk_mb, writers, bare, disk)  # fmt: skip
                    rows.append(row)
                    print(json.dumps(row), flush=True)
                    if precision in stores:
                        shutil.rmtree(path)
                    else:
                        stores[precision] = path
        if "fp32" in stores and "bf16" in stores:
            errs = rel_errors(stores["bf16"], stores["fp32"])
            rows.append({"model": arch, "bf16_rel_error_median": float(np.median(errs)),
                         "bf16_rel_error_max": float(np.max(errs)), "n_layers": len(errs)})  # fmt: skip
            print(json.dumps(rows[-1]), flush=True)
        for p in stores.values():
            shutil.rmtree(p, ignore_errors=True)
        del model, xb
        torch.cuda.empty_cache() if device.type == "cuda" else None

    print(f"\n{info['device']}  disk {disk['fsync_Bps'] / 1e9:.2f} GB/s (fsync)")
    print(f"{'model':10} {'prec':5} {'chunk':>5} {'wr':>3} {'GB':>6} {'fwd s':>7} {'wall s':>7} "
          f"{'+sync s':>8} {'floor s':>8} {'ratio':>6} {'r_sync':>6}")  # fmt: skip
    for r in rows:
        if "wall_s" in r:
            print(f"{r['model']:10} {r['precision']:5} {r['chunk_mb']:5g} {r['writers']:3d} "
                  f"{r['bytes'] / 1e9:6.2f} {r['bare_forward_s']:7.3f} "
                  f"{r['wall_s']:7.2f} {r['wall_sync_s']:8.2f} {r['floor_s']:8.2f} {r['ratio']:6.2f} "
                  f"{r['ratio_sync']:6.2f}")  # fmt: skip
        else:
            print(f"{r['model']:10} bf16 vs fp32 rel. error: median {r['bf16_rel_error_median']:.2e}, "
                  f"max {r['bf16_rel_error_max']:.2e} over {r['n_layers']} layers")  # fmt: skip
    if args.json:
        args.json.write_text(
            json.dumps({"info": info, "disk": disk, "zarr": zrates, "rows": rows}, indent=1)
        )


if __name__ == "__main__":
    main()
