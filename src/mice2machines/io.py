"""I/O at the edges: atomic writes, hashes, provenance and logging for rule scripts."""

from __future__ import annotations

import atexit
import contextlib
import glob
import hashlib
import json
import logging
import os
import resource
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


#: CF conventions the stores follow (labels as flag variables, units and long names)
CONVENTIONS = "CF-1.10"
#: long name and units of the variables the workflow writes; others get their name and "1"
VARIABLE_ATTRS = {
    "responses": ("mean dF/F per image presentation (trial response)", "1"),
    "blank_responses": ("mean dF/F per blank-sweep presentation", "1"),
    "trials": ("dF/F around each presentation onset", "1"),
    "reliability": ("split-half reliability of the image responses", "1"),
    "images": ("stimulus image intensity", "1"),
    "labels": ("class label", "1"),
    "split": ("data split code", "1"),
    "ceiling_inter_animal": ("inter-animal consistency ceiling (median held-out r)", "1"),
}


def _with(var, data, attrs: dict):
    out = var.copy(data=data)
    out.attrs = attrs
    out.encoding = {}
    return out


def _is_text(var) -> bool:
    return var.dtype.kind in "UOST"


def encode_labels(ds):
    """Text labels as CF flag variables: integer codes with ``flag_values`` and
    ``flag_meanings`` (and the exact strings in ``categories``), which every zarr reader
    (zarr-python, tensorstore, ...) opens; variable-length strings are a zarr-python-only
    extension. Missing labels (None/NaN) get code -1 and read back as ""."""

    def encode(var):
        values = np.asarray(var.values, dtype=object).ravel()
        missing = np.array([v is None or (isinstance(v, float) and v != v) for v in values])
        text = np.where(missing, "", values).astype(str)
        cats, codes = np.unique(text[~missing], return_inverse=True)
        cats = cats.tolist()
        full = np.full(text.shape, -1, dtype=np.int64)
        full[~missing] = codes
        dtype = np.int8 if len(cats) < 127 else np.int16 if len(cats) < 32767 else np.int32
        attrs = {
            **var.attrs,
            "flag_values": list(range(len(cats))),
            "flag_meanings": " ".join(c.replace(" ", "_") or "_" for c in cats),
            "categories": cats,
        }
        return _with(var, full.astype(dtype).reshape(var.shape), attrs)

    coords = {k: encode(v.variable) for k, v in ds.coords.items() if _is_text(v)}
    data = {k: encode(v.variable) for k, v in ds.data_vars.items() if _is_text(v)}
    out = ds.assign(data)
    for k, v in coords.items():  # index coordinates too: drop the index, then set the codes
        out = out.drop_vars(k).assign_coords({k: v})
    return out


def decode_labels(ds):
    """The inverse of encode_labels: flag variables with ``categories`` back to strings
    (lazily for dask-backed variables)."""

    def decode(var):
        cats = np.array([*var.attrs["categories"], ""], dtype=str)  # code -1 -> ""
        attrs = {
            k: v
            for k, v in var.attrs.items()
            if k not in ("flag_values", "flag_meanings", "categories")
        }
        data = var.data
        if hasattr(data, "map_blocks"):
            data = data.map_blocks(lambda c: cats[c], dtype=cats.dtype)
        else:
            data = cats[np.asarray(data)]
        return _with(var, data, attrs)

    def coded(v):
        return "categories" in v.attrs and "flag_values" in v.attrs

    coords = {k: decode(v.variable) for k, v in ds.coords.items() if coded(v)}
    data = {k: decode(v.variable) for k, v in ds.data_vars.items() if coded(v)}
    out = ds.assign(data)
    for k, v in coords.items():
        out = out.drop_vars(k).assign_coords({k: v})
    return out


def describe(ds, title: str):
    """CF attributes: ``Conventions`` and ``title`` on the store (a title already set is
    kept), ``long_name`` and ``units`` on every data variable (VARIABLE_ATTRS, else the
    variable's name and "1", dimensionless)."""
    ds = ds.copy()
    ds.attrs = {"Conventions": CONVENTIONS, "title": title, **ds.attrs}
    ds.attrs["Conventions"] = CONVENTIONS
    for name, var in ds.data_vars.items():
        long_name, units = VARIABLE_ATTRS.get(name, (str(name).replace("_", " "), "1"))
        var.attrs.setdefault("long_name", long_name)
        if "flag_values" not in var.attrs:
            var.attrs.setdefault("units", units)
    return ds


def prepare_store(ds, path: str | os.PathLike, title: str | None = None):
    """A Dataset as written to a store: labels encoded, CF attributes set."""
    name = Path(path).name.removesuffix(".zarr")
    return describe(encode_labels(ds), title or f"mice2machines {name} store")


@contextlib.contextmanager
def _quiet_consolidation():
    # zarr-python marks v3 consolidated metadata as not (yet) in the spec; readers that do not
    # know the key ignore it, and xarray stops warning and listing the store
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata is currently not part")
        yield


def consolidate(path: str | os.PathLike) -> None:
    """Consolidate a zarr store's metadata into its root zarr.json (before Snakemake marks
    the directory: its ``.snakemake_timestamp`` is then never listed by a reader)."""
    import zarr

    with _quiet_consolidation():
        zarr.consolidate_metadata(str(path))


def as_str(values) -> np.ndarray:
    """Labels as a numpy str array, from object, fixed-width or StringDType values (zarr's
    variable-length strings read back as StringDType, which does not cast to str directly)."""
    return np.asarray(values, dtype=object).astype(str)


def write_zarr_atomic(
    ds, path: str | os.PathLike, encoding: dict | None = None, title: str | None = None
) -> Path:
    """Write an xarray Dataset to a zarr v3 store at `path` via a temporary store and rename:
    labels as CF flag variables, CF attributes, consolidated metadata."""
    ds = prepare_store(ds, path, title)
    with atomic_path(path) as tmp, _quiet_consolidation():
        ds.to_zarr(tmp, mode="w", zarr_format=3, consolidated=True, encoding=encoding)
    return Path(path)


def is_consolidated(path: str | os.PathLike) -> bool:
    """Whether a zarr v3 store has consolidated metadata in its root zarr.json."""
    meta = Path(path) / "zarr.json"
    try:
        return bool(json.loads(meta.read_text()).get("consolidated_metadata"))
    except (OSError, ValueError):
        return False


def open_zarr(path: str | os.PathLike, **kwargs):
    """Open a store written by write_zarr_atomic, lazily (dask-backed), labels as strings.
    ``chunks=None``: lazily indexed numpy instead of dask, for a store read in slices or
    whole (no dask import: half a second of every job that needs no dask)."""
    import xarray as xr

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: zarr store does not exist")
    return decode_labels(xr.open_zarr(path, consolidated=is_consolidated(path), **kwargs))


def concat_stores(parts, dim: str, **options):
    """Datasets read from stores, concatenated along ``dim`` (lazily where they are): the
    union of their other coordinates (outer join), every data variable along ``dim``;
    ``options`` (coords, compat, fill_value, combine_attrs, ...) go on to ``xr.concat``."""
    import xarray as xr

    return xr.concat(list(parts), dim=dim, join="outer", data_vars="all", **options)


#: exception types (by name, so no optional library is imported) that mean the network or a
#: server failed, not the code; builtin ConnectionError and TimeoutError count with subclasses
NETWORK_ERRORS = frozenset(
    "URLError HTTPError DownloadError gaierror SSLError IncompleteRead RemoteDisconnected "
    "ConnectionError ConnectTimeout ReadTimeout MaxRetryError NewConnectionError ProxyError "
    "LocalEntryNotFoundError OfflineModeIsEnabled".split()
)
OFFLINE_HINT = (
    "offline: run the download rules (fetch_weights, allen_download) on a machine with "
    "network access, or put the files where the rule expects them"
)


def error_line(exc: BaseException, log_path: str | os.PathLike | None = None) -> str:
    """One console line for a script's failure: the error, a hint for network failures
    (what failed, what to do offline), and where the traceback is."""
    chain, e = [], exc
    while e is not None and len(chain) < 8:
        chain.append(e)
        e = e.__cause__ or e.__context__
    first = " ".join(str(exc).split()) or type(exc).__name__
    line = f"{type(exc).__name__}: {first}"
    network = any(
        isinstance(e, ConnectionError | TimeoutError) or type(e).__name__ in NETWORK_ERRORS
        for e in chain
    )
    if network and "ffline" not in line:
        line = f"network failure: {line}; {OFFLINE_HINT}"
    return line + (f" (traceback: {log_path})" if log_path else "")


_PEAK_AT_EXIT: set[str] = set()  # loggers whose peak memory is logged at exit
_CONSOLE: list = []  # the console's stderr, kept from the first redirection of a process


def _route_stderr(log_path: Path):
    """Point fd 2 (Python's and native libraries' stderr) at the log file; return a stream
    on the console's stderr (the same one when called again in a process)."""
    sys.stderr.flush()
    if not _CONSOLE:
        _CONSOLE.append(os.fdopen(os.dup(2), "w", buffering=1))
    console = _CONSOLE[0]
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.dup2(fd, 2)
    os.close(fd)
    sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
    return console


def peak_rss_mb() -> tuple[float, float, str]:
    """Peak resident memory in MB (10^6 bytes, Snakemake's ``mem_mb`` unit) of this process
    and of its largest finished child, and where the first came from: VmHWM (/proc), else
    ru_maxrss (which a process inherits across exec: an upper bound there). A child's
    ru_maxrss counts the pages it shared with this process when forked, so a ``git`` run
    late in a job reads about as large as the job then was."""
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, else KiB
    child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * scale / 1e6
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024 / 1e6, child, "VmHWM"
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 1e6, child, "ru_maxrss"


def _log_peak_rss(name: str) -> None:
    peak, child, source = peak_rss_mb()
    with contextlib.suppress(Exception):
        logging.getLogger(name).info(
            "peak memory %.0f MB (%s; largest child process %.0f MB)", peak, source, child
        )


def script_logger(
    log_path: str | os.PathLike | None, name: str = "mice2machines"
) -> logging.Logger:
    """Logger writing to a rule's log file, one line per event.

    With a log file, everything a script writes to stderr (Python warnings, library logging,
    native libraries' output, tracebacks) goes into it too; the console gets only the
    script's warnings and, on a failure, one line naming the error and the log. The log ends
    with the process's peak memory (`peak_rss_mb`), to set beside the job's ``mem_mb``.
    """
    logger = logging.getLogger(name)
    logger.setLevel(logging.INFO)
    logger.handlers.clear()
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S")
    if not log_path:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(fmt)
        logger.addHandler(handler)
        logger.propagate = False
        return logger
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_path.write_text("")
    console = _route_stderr(log_path)
    to_file = logging.StreamHandler(sys.stderr)
    to_console = logging.StreamHandler(console)
    to_console.setLevel(logging.WARNING)
    for h in (to_file, to_console):
        h.setFormatter(fmt)
        logger.addHandler(h)
    logger.propagate = False
    logging.captureWarnings(True)
    pywarn = logging.getLogger("py.warnings")
    pywarn.handlers = [to_file]
    pywarn.propagate = False

    def excepthook(kind, exc, tb):
        logger.removeHandler(to_console)
        logger.error("failed", exc_info=(kind, exc, tb))
        console.write(f"{error_line(exc, log_path)}\n")
        console.flush()

    sys.excepthook = excepthook
    if name not in _PEAK_AT_EXIT:
        _PEAK_AT_EXIT.add(name)
        atexit.register(_log_peak_rss, name)
    return logger
