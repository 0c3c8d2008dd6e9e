"""NeuRN forward+backward against a 3x3 convolution on the same tensor, on the GPU.

For stimulus-sized (118 x 3 x 224 x 224) and feature-map-sized (16 x 64 x 112 x 112)
tensors in fp32 and bf16: median time of NeuRN (eager; torch.compile'd; eager with separable
box filters) and of ``Conv2d(C, C, 3, padding=1)``, forward and forward+backward; plus NeuRN's
error against a float64 evaluation of the same function.

    PYTHONPATH=src python benchmarks/neurn.py
"""

from __future__ import annotations

import argparse
import functools
import json
import time

import torch
import torch.nn.functional as F
from common import cuda_ms

from mice2machines import neurn as N
from mice2machines.neurn import neurn


def box_means_separable(xp, k):
    """Variant: one separable pass (k x 1, then 1 x k) over x and x^2 stacked along channels."""
    c = xp.shape[1]
    both = torch.cat([xp, xp * xp], dim=1)
    both = F.avg_pool2d(F.avg_pool2d(both, (k, 1), stride=1), (1, k), stride=1)
    return both[:, :c], both[:, c:]


timed = functools.partial(cuda_ms, warmup=5)  # median ms, after 5 warm-up calls


def bench(shape, dtype, device, compiled, reps) -> dict:
    """One shape and dtype: NeuRN (eager, compiled) and a 3x3 conv, forward and forward+backward."""
    torch.manual_seed(0)
    x = (torch.rand(shape, device=device) * 255).to(dtype)
    g = torch.rand(shape, device=device).to(dtype)
    xg = x.clone().requires_grad_(True)
    conv = torch.nn.Conv2d(shape[1], shape[1], 3, padding=1).to(device, dtype)
    ref = neurn(x.double()).float()
    err = float((neurn(x).float() - ref).norm() / ref.norm())
    row = {
        "shape": "x".join(map(str, shape)),
        "dtype": str(dtype).split(".")[1],
        "rel_err_vs_f64": err,
    }
    with torch.no_grad():
        row["neurn_fwd_ms"] = timed(lambda: neurn(x), reps)
        row["conv_fwd_ms"] = timed(lambda: conv(x), reps)
    row["neurn_fwdbwd_ms"] = timed(lambda: neurn(xg).backward(g), reps)
    row["conv_fwdbwd_ms"] = timed(lambda: conv(xg).backward(g), reps)
    if compiled is not None:
        try:
            with torch.no_grad():
                row["neurn_compiled_fwd_ms"] = timed(lambda: compiled(x), reps)
            row["neurn_compiled_fwdbwd_ms"] = timed(lambda: compiled(xg).backward(g), reps)
            diff = (compiled(x).float() - neurn(x).float()).abs().max()
            row["compiled_max_abs_diff"] = float(diff)
        except Exception as err:  # report, don't hide: compile may be unavailable
            row["compile_error"] = f"{type(err).__name__}: {err}"[:200]
    current = N.box_means
    N.box_means = box_means_separable
    try:
        with torch.no_grad():
            row["neurn_sep_fwd_ms"] = timed(lambda: neurn(x), reps)
        row["neurn_sep_fwdbwd_ms"] = timed(lambda: neurn(xg).backward(g), reps)
    finally:
        N.box_means = current
    row["fwdbwd_ratio_vs_conv"] = row["neurn_fwdbwd_ms"] / row["conv_fwdbwd_ms"]
    row["fwd_min_bytes"] = 2 * x.numel() * x.element_size()  # read x once, write out once
    return row


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shapes", default="118x3x224x224,16x64x112x112")
    ap.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--reps", type=int, default=20)
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    name = torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu"
    print(
        json.dumps({"device": name, "torch": torch.__version__, "date": time.strftime("%Y-%m-%d")})
    )
    compiled = torch.compile(neurn) if args.compile else None
    rows = []
    for shape in [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]:
        for dtype in (torch.float32, torch.bfloat16):
            rows.append(bench(shape, dtype, device, compiled, args.reps))
            print(json.dumps(rows[-1]), flush=True)
    print(f"\n{name}")
    print(f"{'shape':16} {'dtype':9} {'neurn f':>8} {'conv f':>8} {'neurn f+b':>10} {'conv f+b':>9} "
          f"{'ratio':>6} {'comp f+b':>9} {'sep f':>7} {'sep f+b':>7} {'err':>8}")  # fmt: skip
    for r in rows:
        print(f"{r['shape']:16} {r['dtype']:9} {r['neurn_fwd_ms']:8.3f} {r['conv_fwd_ms']:8.3f} "
              f"{r['neurn_fwdbwd_ms']:10.3f} {r['conv_fwdbwd_ms']:9.3f} {r['fwdbwd_ratio_vs_conv']:6.2f} "
              f"{r.get('neurn_compiled_fwdbwd_ms', float('nan')):9.3f} {r['neurn_sep_fwd_ms']:7.3f} "
              f"{r['neurn_sep_fwdbwd_ms']:7.3f} {r['rel_err_vs_f64']:8.1e}")  # fmt: skip


if __name__ == "__main__":
    main()
