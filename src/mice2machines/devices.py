"""Where array code runs: numpy on the CPU, or torch on a device; the CPU thread pool.

Device strings: 'cpu' (numpy), 'cuda' / 'cuda:N' (torch on a GPU), 'torch:cpu' (the torch
code on the CPU, for tests); None / 'auto' picks CUDA when torch sees one.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

#: files one of which exists wherever a GPU driver torch can use is loaded (NVIDIA, ROCm)
GPU_DRIVER_FILES = ("/proc/driver/nvidia/version", "/dev/nvidiactl", "/dev/kfd")


def gpu_driver_absent() -> bool:
    """True on a Linux machine with no GPU driver loaded: no CUDA device can exist there,
    which 'auto' then knows without importing torch (2 s a process)."""
    import sys

    if not sys.platform.startswith("linux") or "torch" in sys.modules:
        return False
    return not any(os.path.exists(f) for f in GPU_DRIVER_FILES)


def resolve_device(device: str | None = None) -> str:
    """'cpu' (numpy) or a torch device ('cuda', 'cuda:N'; 'torch:cpu' runs the torch code on
    the CPU); None/'auto' picks CUDA when torch sees one."""
    if device not in (None, "auto"):
        return str(device)
    if gpu_driver_absent():
        return "cpu"
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is installed wherever CUDA is
        return "cpu"
    return "cuda" if torch.cuda.is_available() else "cpu"


def uses_torch(device: str) -> bool:
    """True where torch computes: 'cuda', 'cuda:N', or 'torch:cpu' (torch on the CPU)."""
    return str(device).startswith(("cuda", "torch:"))


def torch_device(device: str) -> str:
    return str(device).removeprefix("torch:")


def to_device(x, device: str, dtype):
    """numpy array on CPU, torch tensor on CUDA, in the compute dtype."""
    if uses_torch(device):
        import torch

        tdt = getattr(torch, np.dtype(dtype).name)
        if isinstance(x, torch.Tensor):
            return x.to(device=torch_device(device), dtype=tdt)
        x = torch.as_tensor(np.ascontiguousarray(x))
        return x.to(device=torch_device(device), dtype=tdt)
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def to_numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):
        return x.detach().cpu().numpy()
    return np.asarray(x)


#: bytes one block of batched resamples or permutations may use for its temporaries (~256 MB)
MAX_BLOCK_BYTES = 1 << 28


def array_backend(device) -> tuple:
    """(array module, torch device or None) for float64 engines: numpy for "cpu" (or None),
    torch on the device otherwise ("torch:cpu" -> torch on the CPU)."""
    if device is None or str(device) == "cpu":
        return np, None
    import torch

    return torch, torch_device(device)


def put64(x, tdev, integer: bool = False):
    """x as float64 (int64 with `integer`): numpy, or a torch tensor on `tdev`."""
    x = np.ascontiguousarray(x, dtype=np.int64 if integer else np.float64)
    if tdev is None:
        return x
    import torch

    return torch.as_tensor(x, device=tdev)


_BLAS = None  # threadpoolctl's controller of the loaded BLAS; False without threadpoolctl


_POOL: tuple[int, ThreadPoolExecutor] | None = None  # (threads, pool)


_POOL_LOCK = threading.Lock()


def blas_controller():
    global _BLAS
    if _BLAS is None:
        try:
            from threadpoolctl import ThreadpoolController

            _BLAS = ThreadpoolController().select(user_api="blas")
        except ImportError:
            _BLAS = False
    return _BLAS or None


def small_eigh(a: np.ndarray):
    """numpy's eigh with one BLAS thread: on matrices of a few hundred rows BLAS's threads
    cost more than they give (20x slower with two threads on a busy 2-core machine)."""
    ctl = blas_controller()
    if ctl is None:
        return np.linalg.eigh(a)
    with ctl.limit(limits=1):
        return np.linalg.eigh(a)


def cpu_workers() -> int:
    """Threads for the CPU Gram: BLAS's current thread count, at most the usable cores
    (1 without threadpoolctl), so that the threads replace BLAS's rather than add to them."""
    ctl = blas_controller()
    if ctl is None:
        return 1
    blas = max((lib.num_threads for lib in ctl.lib_controllers), default=1)
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, min(blas, cores))


def thread_pool(n: int) -> ThreadPoolExecutor:
    """A shared pool of at least n threads."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None or _POOL[0] < n:
            if _POOL is not None:
                _POOL[1].shutdown(wait=False)
            _POOL = (n, ThreadPoolExecutor(n, thread_name_prefix="gram"))
        return _POOL[1]
