"""DANDI discovery and download of the Visual Coding 2P sessions (dandiset 000728, NWB 2).

Discovery lists the dandiset's assets through the DANDI REST API (the calls of the `dandi`
client's `get_dandiset(...).get_assets()` and `get_raw_metadata()`, made with the standard
library: the `dandi` 0.35 of the main environment cannot import under pydantic 2), keeps the
processed natural-scenes sessions (asset path matching `path_regex`, no TwoPhotonSeries among
the asset's measured variables), filters them by experiment id and Cre line (the asset
metadata's genotype) and, with an experiments table, by area, and writes the manifest the
workflow plans from. Area and depth are not in the asset metadata, and the converter left the
depth out of the files (`{depth}`): they come from the experiments table (Allen's
`experiment_containers.json`, or a TSV/CSV with `experiment_id, imaging_depth[, area,
container_id]`). Downloads go through `mice2machines.download` (a `.part` file, the size and
the archive's sha256, or its dandi-etag, checked before the rename).
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import re
import urllib.request
from pathlib import Path

from .. import download as _download
from ..download import DownloadError
from . import allen
from .allen import MANIFEST_COLUMNS, read_manifest  # noqa: F401 (re-exported)
from .labels import UnknownCreLineError, cre_line_from_genotype, ei_class

DANDI_COLUMNS = (
    *MANIFEST_COLUMNS,
    "dandiset",
    "version",
    "asset_id",
    "asset_path",
    "url",
    "size",
    "sha256",
    "dandi_etag",
)
RAW_VARIABLE = "TwoPhotonSeries"
#: the `dandi` settings discovery reads (the manifest's rule params): not cache_dir, stream or
#: unknown_depth, which change where or how sessions are read, not which
DISCOVERY_KEYS = (
    "dandiset",
    "version",
    "api_url",
    "sessions",
    "cre_lines",
    "areas",
    "max_sessions",
    "experiments_table",
    "path_regex",
)
USER_AGENT = "mice2machines (DANDI discovery)"


class DandiError(ValueError):
    """A dandiset, asset or experiments table that does not give usable sessions."""


def settings(cfg: dict | None) -> dict:
    """The `dandi` config section, validated, defaults filled (schemas/dandi.schema.yaml)."""
    from ..settings import section

    return section("dandi", cfg)


def discovery_params(config: dict) -> str:
    """The dandi_manifest rule's params: the discovery settings as one canonical string."""
    from ..workflow_params import canonical

    return canonical({k: config["dandi"][k] for k in DISCOVERY_KEYS})


def read_experiments_table(path: str | os.PathLike) -> dict[int, dict]:
    """experiment id -> {imaging_depth, area, container_id} from Allen's
    experiment_containers.json (containers nesting their ophys experiments) or a TSV/CSV."""
    path = Path(path)
    if not path.exists():
        raise DandiError(f"{path}: experiments table does not exist (dandi.experiments_table)")
    out: dict[int, dict] = {}
    if path.suffix == ".json":
        with open(path) as f:
            containers = json.load(f)
        for c in containers:
            for e in c.get("ophys_experiments", []):
                out[int(e["id"])] = {
                    "imaging_depth": int(e.get("imaging_depth", c["imaging_depth"])),
                    "area": c["targeted_structure"]["acronym"]
                    if isinstance(c.get("targeted_structure"), dict)
                    else c.get("targeted_structure", ""),
                    "container_id": int(c["id"]),
                }
        return out
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t" if path.suffix == ".tsv" else ","))
    if not rows or not {"experiment_id", "imaging_depth"} <= set(rows[0]):
        raise DandiError(f"{path}: needs columns experiment_id and imaging_depth")
    for r in rows:
        out[int(r["experiment_id"])] = {
            "imaging_depth": int(float(r["imaging_depth"])),
            "area": r.get("area", ""),
            "container_id": int(r["container_id"]) if r.get("container_id") else -1,
        }
    return out


def _variables(metadata: dict) -> set[str]:
    return {
        str(v.get("value", "")) for v in metadata.get("variableMeasured", []) if isinstance(v, dict)
    }


def _genotype(metadata: dict) -> str:
    for who in metadata.get("wasAttributedTo", []):
        if who.get("genotype"):
            g = who["genotype"]
            return g if isinstance(g, str) else str(g.get("name", ""))
    return ""


def _row(asset: dict, metadata: dict, eid: int, table: dict, cfg: dict, version: str) -> dict:
    genotype = _genotype(metadata)
    try:
        cre = cre_line_from_genotype(genotype) if genotype else ""
    except UnknownCreLineError:
        cre = ""
    known = table.get(eid, {})
    digest = metadata.get("digest", {})
    return {
        "experiment_id": eid,
        "container_id": known.get("container_id", -1),
        "area": known.get("area", ""),
        "cre_line": cre,
        "ei_class": ei_class(cre) if cre else "",
        "imaging_depth": known.get("imaging_depth", ""),
        "session_type": "three_session_B",
        "specimen_name": "",
        "dandiset": cfg["dandiset"],
        "version": version,
        "asset_id": asset["asset_id"],
        "asset_path": asset["path"],
        "url": f"{_version_url(cfg, version)}assets/{asset['asset_id']}/download/",
        "size": asset["size"],
        "sha256": digest.get("dandi:sha2-256", ""),
        "dandi_etag": digest.get("dandi:dandi-etag", ""),
    }


def _api_get(url: str, timeout: float = 60.0) -> dict:
    """One JSON answer of the DANDI REST API; DandiError naming the URL on failure."""
    req = urllib.request.Request(
        url, headers={"Accept": "application/json", "User-Agent": USER_AGENT}
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.load(resp)
    except (OSError, ValueError) as e:  # URLError/HTTPError are OSErrors
        raise DandiError(f"{url}: DANDI API request failed: {e}") from e


def _paginate(url: str):
    while url:
        page = _api_get(url)
        yield from page["results"]
        url = page.get("next")


def _version_url(cfg: dict, version: str) -> str:
    return f"{cfg['api_url'].rstrip('/')}/dandisets/{cfg['dandiset']}/versions/{version}/"


def resolve_version(cfg: dict) -> str:
    """`cfg['version']`, or the dandiset's most recent published version (else draft)."""
    if cfg["version"]:
        return cfg["version"]
    info = _api_get(f"{cfg['api_url'].rstrip('/')}/dandisets/{cfg['dandiset']}/")
    published = info.get("most_recent_published_version") or {}
    return published.get("version") or "draft"


def discover(cfg: dict | None = None) -> list[dict]:
    """Manifest rows of the dandiset's processed natural-scenes sessions matching `cfg`."""
    cfg = settings(cfg)
    table = read_experiments_table(cfg["experiments_table"]) if cfg["experiments_table"] else {}
    if cfg["areas"] and not table:
        raise DandiError(
            "dandi.areas needs dandi.experiments_table (the area is not in the asset metadata); "
            "or leave it empty and filter with neural.areas"
        )
    pattern = re.compile(cfg["path_regex"])
    wanted = {int(s) for s in cfg["sessions"] or []}
    cres = set(cfg["cre_lines"] or [])
    version = resolve_version(cfg)
    base = _version_url(cfg, version)
    rows: dict[int, dict] = {}
    for asset in _paginate(f"{base}assets/?order=path&page_size=1000"):
        m = pattern.search(asset["path"])
        if not m:
            continue
        eid = int(m.group("experiment_id"))
        if wanted and eid not in wanted:
            continue
        if cfg["areas"] and table.get(eid, {}).get("area") not in cfg["areas"]:
            continue
        metadata = _api_get(f"{base}assets/{asset['asset_id']}/")
        if RAW_VARIABLE in _variables(metadata):
            continue
        row = _row(asset, metadata, eid, table, cfg, version)
        if cres and row["cre_line"] not in cres:
            continue
        if eid in rows:
            raise DandiError(
                f"dandiset {cfg['dandiset']}: two processed assets for experiment {eid}: "
                f"{rows[eid]['asset_path']} and {asset['path']} (narrow dandi.path_regex)"
            )
        rows[eid] = row
    missing = sorted(wanted - set(rows))
    if missing:
        raise DandiError(
            f"dandiset {cfg['dandiset']}@{version}: no processed StimB asset for {missing}"
        )
    out = [rows[k] for k in sorted(rows)]
    return out[: cfg["max_sessions"]] if cfg["max_sessions"] else out


def write_manifest(rows: list[dict], path: str | os.PathLike) -> None:
    """The DANDI manifest TSV (the Allen columns, then the asset's), written atomically."""
    allen.write_manifest(rows, path, DANDI_COLUMNS)


def manifest_row(manifest: str | os.PathLike, experiment_id: int) -> dict:
    """One experiment's row of a DANDI manifest."""
    with open(manifest, newline="") as f:
        for r in csv.DictReader(f, delimiter="\t"):
            if int(r["experiment_id"]) == int(experiment_id):
                return r
    raise DandiError(f"{manifest}: no experiment {experiment_id}")


def dandi_etag(path: str | os.PathLike, part_size: int = 64 << 20) -> str:
    """The archive's dandi-etag of a file: the S3 multipart ETag over DANDI's parts (64 MiB,
    larger when a file would need 10,000 or more), as dandischema computes it."""
    size = Path(path).stat().st_size
    if math.ceil(size / part_size) >= 10_000:
        part_size = math.ceil(size / 10_000)
    digests, n = [], 0
    with open(path, "rb") as f:
        while block := f.read(part_size):
            digests.append(hashlib.md5(block, usedforsecurity=False).digest())
            n += 1
    return f"{hashlib.md5(b''.join(digests), usedforsecurity=False).hexdigest()}-{n}"


def _etag_check(row: dict):
    def validate(path: Path, size: int | None) -> None:
        if row.get("dandi_etag") and not row.get("sha256"):
            got = dandi_etag(path)
            if got != row["dandi_etag"]:
                raise DownloadError(f"{path}: dandi-etag {got}, expected {row['dandi_etag']}")

    return validate


def is_complete(path: str | os.PathLike, row: dict) -> bool:
    """True when `path` already holds the asset (size, and sha256 or dandi-etag, match)."""
    if not Path(path).exists():
        return False
    try:
        _download.check(
            path, sha256=row.get("sha256") or None, size=int(row["size"]), validate=_etag_check(row)
        )
    except DownloadError:
        return False
    return True


def download_asset(
    row: dict, dest: str | os.PathLike, retries: int = 3, log=print, backoff_s: float = 2.0
) -> Path:
    """Fetch one manifest row's asset to `dest`, checked; a complete file there is kept, and
    a broken transfer goes on from where it stopped (HTTP range, also in a later job)."""
    dest = Path(dest)
    log = log or (lambda msg: None)
    if is_complete(dest, row):
        log(f"{dest}: already complete, skipped")
        return dest

    def validate(path: Path, size: int | None) -> None:
        _download.check(path, size=int(row["size"]), validate=_etag_check(row))

    return _download.download(
        row["url"],
        dest,
        sha256=row.get("sha256") or None,
        validate=validate,
        retries=retries,
        backoff_s=backoff_s,
        resume=True,
        hint=f"`dandi download {row['url']}` on a machine with network access, placed at {dest}",
        log=log,
    )


def session_depth(row: dict) -> int | None:
    """The imaging depth of a manifest row (the experiments table's), else None."""
    text = str(row.get("imaging_depth", "")).strip()
    return int(float(text)) if text else None


def open_session(
    manifest: str | os.PathLike,
    experiment_id: int,
    nwb_path: str | os.PathLike | None = None,
    default_depth: int | None = None,
):
    """A manifest row's session: its downloaded file, else streamed from the asset's URL,
    with the experiments table's depth and (streamed) the archive's sha256."""
    from .nwb2 import read_session

    row = manifest_row(manifest, experiment_id)
    return read_session(
        str(nwb_path) if nwb_path else row["url"],
        imaging_depth=session_depth(row),
        sha256=None if nwb_path else (row.get("sha256") or None),
        default_depth=default_depth,
    )
