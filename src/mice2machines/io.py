"""I/O at the edges: atomic writes, hashes, provenance and logging for rule scripts."""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from . import __version__


def code_version() -> str:
    """Package version plus the git commit of the source tree when there is one."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "--short=12", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(here), "status", "--porcelain", "--", str(here)],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        return f"{__version__}+g{sha}{'.dirty' if dirty else ''}"
    except (OSError, subprocess.SubprocessError):
        return __version__


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    """Hex sha256 of a file, streamed."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def provenance(config: dict | None = None, inputs: dict | None = None, **extra) -> str:
    """JSON string recorded in every store's attrs: code version, config, input hashes."""
    record = {"code_version": code_version(), "config": config or {}, "inputs": inputs or {}}
    record.update(extra)
    return json.dumps(record, sort_keys=True, default=str)


def _tmp_sibling(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")


def sweep_temporaries(path: str | os.PathLike) -> list[Path]:
    """Remove the temporaries (``.NAME.tmp-*``) that earlier writers of ``path`` left beside it.

    A writer killed mid-write (SIGKILL, a lost node, ``scancel``) leaves its temporary behind;
    the next `atomic_path` on the same path sweeps it before writing. Snakemake runs one job per
    output at a time, so any temporary of the path seen then is an orphan. Returns what went.
    """
    path = Path(path)
    gone = sorted(path.parent.glob(f".{glob.escape(path.name)}.tmp-*"))
    for orphan in gone:
        _remove(orphan)
    if gone:
        logging.getLogger(__name__).warning(
            "removed %d temporaries a killed writer of %s left: %s",
            len(gone),
            path,
            ", ".join(p.name for p in gone),
        )
    return gone


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling path; move it onto `path` only if the block succeeds.

    Temporaries of `path` left by killed writers are removed first (`sweep_temporaries`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep_temporaries(path)
    tmp = _tmp_sibling(path)
    try:
        yield tmp
        if path.exists():
            _remove(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            _remove(tmp)


def portable_strings(ds):
    """Fixed-width unicode (numpy ``<U``) as variable-length strings: zarr v3 has no spec for
    the former (stores that other zarr readers may not open), and one for the latter."""

    def fix(items):
        return {k: v.variable.astype(object) for k, v in items if v.dtype.kind == "U"}

    return ds.assign_coords(fix(ds.coords.items())).assign(fix(ds.data_vars.items()))


def as_str(values) -> np.ndarray:
    """Labels as a numpy str array, from object, fixed-width or StringDType values (zarr's
    variable-length strings read back as StringDType, which does not cast to str directly)."""
    return np.asarray(values, dtype=object).astype(str)


def write_zarr_atomic(ds, path: str | os.PathLike, encoding: dict | None = None) -> Path:
    """Write an xarray Dataset to a zarr v3 store at `path` via a temporary store and rename."""
    ds = portable_strings(ds)
    with atomic_path(path) as tmp:
        ds.to_zarr(tmp, mode="w", zarr_format=3, consolidated=False, encoding=encoding)
    return Path(path)


def open_zarr(path: str | os.PathLike, **kwargs):
    """Open a store written by write_zarr_atomic, lazily (dask-backed)."""
    import xarray as xr

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: zarr store does not exist")
    with warnings.catch_warnings():
        # Snakemake marks directory outputs with a .snakemake_timestamp file
        warnings.filterwarnings("ignore", message="Object at .snakemake_timestamp")
        return xr.open_zarr(path, consolidated=False, **kwargs)


def concat_stores(parts, dim: str, **options):
    """Datasets read from stores, concatenated along ``dim`` (lazily where they are): the
    union of their other coordinates (outer join), every data variable along ``dim``;
    ``options`` (coords, compat, fill_value, combine_attrs, ...) go on to ``xr.concat``."""
    import xarray as xr

    return xr.concat(list(parts), dim=dim, join="outer", data_vars="all", **options)


def script_logger(
    log_path: str | os.PathLike | None, name: str = "mice2machines"
) -> logging.Logger:
    """Logger writing to a rule's log file (and stderr), one line per event."""
    logger = logging.getLogger(name)
    logger.setLevel(logging.INFO)
    logger.handlers.clear()
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S")
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_path:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_path, mode="w"))
    for h in handlers:
        h.setFormatter(fmt)
        logger.addHandler(h)
    logger.propagate = False
    return logger
