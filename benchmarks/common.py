"""What the benchmark scripts share: a GPU-aware timer and the JSON report."""

from __future__ import annotations

import json
import statistics
import time


def cuda_ms(fn, reps: int, warmup: int = 2) -> float:
    """Median ms of fn: CUDA events on a GPU, a host clock elsewhere (smoke runs on CPU)."""
    import torch

    for _ in range(warmup):
        fn()
    out = []
    for _ in range(reps):
        if not torch.cuda.is_available():
            t0 = time.perf_counter()
            fn()
            out.append((time.perf_counter() - t0) * 1e3)
            continue
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        out.append(start.elapsed_time(end))
    return statistics.median(out)


def emit(out: dict, path: str | None = None) -> None:
    """Print the results as JSON; also write them to ``path`` when given."""
    print(json.dumps(out, indent=1))
    if path:
        with open(path, "w") as f:
            json.dump(out, f, indent=1)
