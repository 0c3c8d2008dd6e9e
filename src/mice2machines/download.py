"""The one downloader: NWB files, published digit sets and pretrained weights all come through it.

Standard library only: it also runs inside the allensdk environment (old numpy). The bytes go to
a hidden ``.part`` sibling and are renamed onto the destination only after every check passed
(the size the server promised, md5 and sha256 when given, and the caller's own ``validate``),
so a failed or partial download never sits under the final name. Each round tries every URL in
turn (mirrors); ``retries`` rounds, with exponential backoff between them. A broken transfer
starts again from the first byte, unless ``resume=True``: the ``.part`` file then stays (named
after the destination) and the next attempt, or the next call, asks for the rest with an HTTP
range (a server that answers with the whole file is read from the start).

    download(url, dest, md5="...")             # -> dest, or DownloadError (one line)
    check(dest, sha256="11ad3fa6")             # a file already there: DownloadError if it is bad
"""

from __future__ import annotations

import hashlib
import os
import time
import urllib.request
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

#: blocks between two progress lines
REPORT_EVERY = 50


class DownloadError(RuntimeError):
    """A download that failed, or a file that is incomplete or corrupt: one line naming the URLs,
    the reason and what to do offline."""


def file_digest(path: str | os.PathLike, algorithm: str, chunk: int = 1 << 22) -> str:
    """Hex digest of a file (``md5``, ``sha256``, ...), streamed."""
    h = hashlib.new(algorithm, usedforsecurity=False)
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def check(
    path: str | os.PathLike,
    md5: str | None = None,
    sha256: str | None = None,
    size: int | None = None,
    validate: Callable[[Path, int | None], None] | None = None,
) -> list[str]:
    """Raise DownloadError unless ``path`` passes every given check; returns the checks made.

    ``sha256`` may be a prefix of the digest (torch.hub's file names carry one).
    ``validate(path, size)`` is the caller's content check; it raises on a bad file."""
    path = Path(path)
    done = []
    if size is not None:
        got = path.stat().st_size
        if got != size:
            raise DownloadError(f"{path}: incomplete download: got {got} of {size} bytes")
        done.append("size")
    for algorithm, expected in (("md5", md5), ("sha256", sha256)):
        if expected:
            got = file_digest(path, algorithm)
            if not got.startswith(expected):
                raise DownloadError(
                    f"{path}: {algorithm} checksum mismatch (invalid hash): got {got}, "
                    f"expected {expected}"
                )
            done.append(algorithm)
    if validate is not None:
        validate(path, size)
        done.append("content")
    return done


class _TransferBroke(OSError):
    """A transfer cut off midway: the bytes so far are good, the rest may follow (resume)."""


def _fetch(
    url: str, part: Path, timeout: float, chunk: int, log: Callable, name: str, resume=False
) -> int | None:
    """Stream ``url`` into ``part`` (after its bytes, when resuming and the server answers the
    range); returns the size the server promised for the whole file (or None)."""
    start = part.stat().st_size if resume and part.exists() else 0
    req = urllib.request.Request(url, headers={"Range": f"bytes={start}-"} if start else {})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        if start and resp.status != 206:
            start = 0
        total = resp.headers.get("Content-Length")
        total = int(total) + start if total is not None else None
        if start:
            log(f"{name}: resuming after {start} bytes")
        with open(part, "ab" if start else "wb") as out:
            return _copy(resp, out, total, start, chunk, log, name)


def _copy(resp, out, total, done: int, chunk: int, log: Callable, name: str) -> int | None:
    """Copy the response body into ``out`` with progress lines; returns ``total``."""
    blocks = 0
    try:
        while block := resp.read(chunk):
            out.write(block)
            done += len(block)
            blocks += 1
            if blocks % REPORT_EVERY == 0:
                pct = f"{100 * done / total:.0f}%" if total else "?"
                log(f"{name}: {done / 1e6:.1f} MB ({pct})")
    except Exception as err:  # http.client.IncompleteRead, connection reset, timeout
        raise _TransferBroke(
            f"transfer broke off after {done} bytes ({type(err).__name__})"
        ) from err
    if total is not None and done < total:  # the connection closed early, without an error
        raise _TransferBroke(f"transfer broke off after {done} of {total} bytes")
    return total


def download(
    urls: str | Sequence[str],
    dest: str | os.PathLike,
    *,
    md5: str | None = None,
    sha256: str | None = None,
    validate: Callable[[Path, int | None], None] | None = None,
    retries: int = 1,
    backoff_s: float = 2.0,
    timeout: float = 60.0,
    chunk: int = 1 << 20,
    hint: str | None = None,
    log: Callable[[str], None] | None = print,
    resume: bool = False,
) -> Path:
    """Fetch ``dest`` from the first of ``urls`` that gives a file passing every check.

    Always downloads (whether a file already at ``dest`` is good enough is the caller's call:
    see `check`). All rounds failing raises DownloadError naming each URL with its last reason
    and ``hint`` (default: place the file there by hand)."""
    urls = (urls,) if isinstance(urls, str) else tuple(urls)
    log = log or (lambda msg: None)
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    reasons: dict[str, str] = {}
    for attempt in range(1, retries + 1):
        for url in urls:
            tag = "resume" if resume else uuid.uuid4().hex[:8]
            part = dest.with_name(f".{dest.name}.{tag}.part")
            keep = False
            try:
                log(f"downloading {url}")
                total = _fetch(url, part, timeout, chunk, log, dest.name, resume)
                done = check(part, md5, sha256, total, validate)
                os.replace(part, dest)
                log(f"{dest}: {dest.stat().st_size} bytes, {', '.join(done) or 'nothing'} ok")
                return dest
            except (OSError, ValueError, DownloadError) as err:  # URLError is an OSError
                keep = resume and isinstance(err, _TransferBroke)
                reasons[url] = str(err).replace(f"{part}: ", "").replace("\n", " ")
                log(f"{url}: attempt {attempt}/{retries} failed: {reasons[url]}")
            finally:
                if not keep:
                    part.unlink(missing_ok=True)
        if attempt < retries:
            time.sleep(min(backoff_s * 2 ** (attempt - 1), 60))
    tried = "; ".join(f"{u}: {r}" for u, r in reasons.items())
    hint = hint or f"download it by hand on a machine with network access and place it at {dest}"
    raise DownloadError(
        f"{dest}: download failed after {retries} attempt(s) ({tried}). Offline: {hint}"
    )
