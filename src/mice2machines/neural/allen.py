"""Allen Brain Observatory discovery (allensdk) and NWB download.

Runs in both environments: discovery imports allensdk lazily and is meant for the pinned
allensdk venv (`python -m mice2machines.allen discover ...`); download needs only the standard
library and h5py. Nothing here imports numpy 2-only code.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from pathlib import Path

from .. import download as _download
from ..download import DownloadError
from .labels import AREAS, ei_class, normalise_cre_line

MANIFEST_COLUMNS = (
    "experiment_id",
    "container_id",
    "area",
    "cre_line",
    "ei_class",
    "imaging_depth",
    "session_type",
    "specimen_name",
)
NATURAL_SCENES_SESSION = "three_session_B"
DEFAULT_URL = (
    "https://allen-brain-observatory.s3.amazonaws.com/visual-coding-2p/"
    "ophys_experiment_data/{experiment_id}.nwb"
)


# --------------------------------------------------------------------------- discovery


def discover(
    manifest_file: str | os.PathLike,
    areas: list[str] | None = None,
    cre_lines: list[str] | None = None,
    imaging_depths: list[int] | None = None,
    include_failed: bool = False,
) -> list[dict]:
    """Natural-scenes experiments matching the filters, one row per container.

    Uses allensdk's BrainObservatoryCache for the container query (works offline from a
    cached experiment_containers.json) and the raw cached json, which nests each container's
    ophys experiments, to pick the three_session_B session without a network call.
    """
    from allensdk.config.manifest import ManifestVersionError
    from allensdk.core.brain_observatory_cache import BrainObservatoryCache

    manifest_file = Path(manifest_file)
    try:
        boc = BrainObservatoryCache(manifest_file=str(manifest_file))
    except ManifestVersionError:
        # allensdk's own advice: a stale manifest is removed and regenerated; keep a copy.
        stale = manifest_file.with_name(manifest_file.name + ".stale")
        os.replace(manifest_file, stale)
        print(f"{manifest_file}: old manifest version, moved to {stale}", file=sys.stderr)
        boc = BrainObservatoryCache(manifest_file=str(manifest_file))
    kwargs: dict = {"include_failed": include_failed}
    if areas:
        kwargs["targeted_structures"] = list(areas)
    if cre_lines:
        kwargs["cre_lines"] = [normalise_cre_line(c) for c in cre_lines]
    if imaging_depths:
        kwargs["imaging_depths"] = [int(d) for d in imaging_depths]
    containers = boc.get_experiment_containers(**kwargs)

    raw_path = manifest_file.parent / "experiment_containers.json"
    with open(raw_path) as f:
        raw = {c["id"]: c for c in json.load(f)}
    rows = []
    for c in containers:
        nested = raw.get(c["id"], {}).get("ophys_experiments", [])
        sessions = [e for e in nested if e.get("stimulus_name") == NATURAL_SCENES_SESSION]
        if not sessions:
            continue
        cre = normalise_cre_line(c["cre_line"])
        rows.append(
            {
                "experiment_id": int(sessions[0]["id"]),
                "container_id": int(c["id"]),
                "area": c["targeted_structure"],
                "cre_line": cre,
                "ei_class": ei_class(cre),
                "imaging_depth": int(c["imaging_depth"]),
                "session_type": NATURAL_SCENES_SESSION,
                "specimen_name": c.get("specimen_name", ""),
            }
        )
    rows.sort(key=lambda r: r["experiment_id"])
    return rows


def write_manifest(rows: list[dict], path: str | os.PathLike, columns=MANIFEST_COLUMNS) -> None:
    """Tab-separated experiment manifest (these columns, in this order), written atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(columns), delimiter="\t", extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, path)


def read_manifest(path: str | os.PathLike) -> list[dict]:
    """Rows of a manifest TSV, experiment ids as int."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    for r in rows:
        r["experiment_id"] = int(r["experiment_id"])
    return rows


# --------------------------------------------------------------------------- download


def verify_nwb(path: str | os.PathLike, expected_size: int | None = None) -> None:
    """Raise DownloadError unless `path` has the expected size and opens as a 2P NWB file."""
    import h5py

    path = Path(path)
    size = path.stat().st_size
    if expected_size is not None and size != expected_size:
        raise DownloadError(f"{path}: {size} bytes, expected {expected_size} (incomplete)")
    try:
        with h5py.File(path, "r") as f:
            missing = [
                k
                for k in ("processing/brain_observatory_pipeline", "stimulus/presentation")
                if k not in f
            ]
    except OSError as e:
        raise DownloadError(f"{path}: not a readable HDF5 file: {e}") from e
    if missing:
        raise DownloadError(f"{path}: HDF5 file lacks {missing}; not a Visual Coding NWB file")


def is_complete(path: str | os.PathLike, expected_size: int | None = None) -> bool:
    """True when a previous download left a complete, readable file."""
    if not Path(path).exists():
        return False
    try:
        verify_nwb(path, expected_size)
    except DownloadError:
        return False
    return True


def download(
    url: str,
    dest: str | os.PathLike,
    retries: int = 3,
    timeout: float = 60.0,
    chunk: int = 1 << 20,
    backoff_s: float = 2.0,
    log=print,
) -> Path:
    """Fetch `url` to `dest` (see `mice2machines.download`), checked as a Visual Coding NWB file.

    A file already complete at `dest` is kept. Nothing partial is ever left under `dest`.
    """
    dest = Path(dest)
    if is_complete(dest):
        log(f"{dest}: already complete, skipped")
        return dest
    return _download.download(
        url,
        dest,
        validate=verify_nwb,
        retries=retries,
        backoff_s=backoff_s,
        timeout=timeout,
        chunk=chunk,
        hint=f"download {url} by hand on a machine with network access and place it at {dest}",
        log=log,
    )


# --------------------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m mice2machines.allen")
    sub = p.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("discover", help="write the natural-scenes experiment manifest")
    d.add_argument("--manifest-file", required=True, help="allensdk cache manifest.json")
    d.add_argument("--out", required=True)
    d.add_argument("--areas", nargs="*", default=list(AREAS))
    d.add_argument("--cre-lines", nargs="*", default=None)
    d.add_argument("--imaging-depths", nargs="*", type=int, default=None)
    d.add_argument("--max-experiments", type=int, default=None)
    g = sub.add_parser("download", help="download one experiment's NWB file")
    g.add_argument("--experiment-id", type=int, required=True)
    g.add_argument("--dest", required=True)
    g.add_argument("--url-template", default=DEFAULT_URL)
    a = p.parse_args(argv)
    if a.cmd == "discover":
        rows = discover(a.manifest_file, a.areas, a.cre_lines, a.imaging_depths)
        if a.max_experiments:
            rows = rows[: a.max_experiments]
        if not rows:
            print(f"{a.manifest_file}: no natural-scenes experiment matches", file=sys.stderr)
            return 1
        write_manifest(rows, a.out)
        print(f"{a.out}: {len(rows)} experiments")
    else:
        download(a.url_template.format(experiment_id=a.experiment_id), a.dest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
