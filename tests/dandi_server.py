"""A loopback HTTP server: files with byte ranges, and the part of the DANDI REST API that the
`dandi` client's `get_dandiset(...).get_assets()` and `asset.get_raw_metadata()` call."""

from __future__ import annotations

import hashlib
import json
import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

VERSION = "0.240101.0000"
WHEN = "2024-01-01T00:00:00Z"


class Served:
    """What the server sent: bytes and requests, per path."""

    def __init__(self):
        self.bytes = 0
        self.requests: list[tuple[str, str]] = []  # (path, Range header or "")
        self.lock = threading.Lock()

    def add(self, path, rng, n):
        with self.lock:
            self.bytes += n
            self.requests.append((path, rng))


def asset_record(asset_id: str, path: str, file: Path, genotype: str, raw: bool = False) -> dict:
    data = file.read_bytes()
    variables = ["ImageSegmentation", "RoiResponseSeries", "PlaneSegmentation"]
    return {
        "asset_id": asset_id,
        "path": path,
        "size": len(data),
        "file": file,
        "metadata": {
            "identifier": asset_id,
            "path": path,
            "contentSize": len(data),
            "digest": {
                "dandi:sha2-256": hashlib.sha256(data).hexdigest(),
                "dandi:dandi-etag": "unused-when-sha256-is-given",
            },
            "variableMeasured": [
                {"schemaKey": "PropertyValue", "value": v}
                for v in variables + (["TwoPhotonSeries"] if raw else [])
            ],
            "wasAttributedTo": [{"schemaKey": "Participant", "genotype": genotype}],
        },
    }


def make_handler(
    files: dict[str, Path], assets: list[dict], dandiset: str, served: Served, cut: list[int]
):
    by_id = {a["asset_id"]: a for a in assets}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def _json(self, obj, status=200):
            body = json.dumps(obj).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _file(self, path: Path):
            data = path.read_bytes()
            rng = self.headers.get("Range", "")
            m = re.match(r"bytes=(\d+)-(\d*)$", rng)
            if m:
                a = int(m.group(1))
                b = min(int(m.group(2)) if m.group(2) else len(data) - 1, len(data) - 1)
                body = data[a : b + 1]
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {a}-{b}/{len(data)}")
            else:
                body = data
                self.send_response(200)
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            sent = 0
            if cut:  # cut this transfer off after `cut[0]` bytes (once)
                body = body[: cut.pop()]
            try:
                for i in range(0, len(body), 1 << 14):
                    self.wfile.write(body[i : i + (1 << 14)])
                    sent += len(body[i : i + (1 << 14)])
            except (BrokenPipeError, ConnectionResetError):
                pass
            served.add(self.path, rng, sent)

        def do_GET(self):
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 16)
            path = self.path.split("?")[0]
            if path.startswith("/files/") and path[7:] in files:
                return self._file(files[path[7:]])
            version = {
                "version": VERSION,
                "name": "Visual Coding 2P (loopback)",
                "asset_count": len(assets),
                "size": sum(a["size"] for a in assets),
                "created": WHEN,
                "modified": WHEN,
                "status": "Published",
            }
            base = f"/api/dandisets/{dandiset}/"
            if path == base:
                return self._json(
                    {
                        "identifier": dandiset,
                        "created": WHEN,
                        "modified": WHEN,
                        "contact_person": "",
                        "embargo_status": "OPEN",
                        "most_recent_published_version": version,
                        "draft_version": {**version, "version": "draft"},
                    }
                )
            m = re.match(rf"^{base}versions/([^/]+)/assets/$", path)
            if m:
                results = [
                    {
                        "asset_id": a["asset_id"],
                        "path": a["path"],
                        "size": a["size"],
                        "created": WHEN,
                        "modified": WHEN,
                        "blob": a["asset_id"],
                        "zarr": None,
                    }
                    for a in sorted(assets, key=lambda a: a["path"])
                ]
                return self._json({"count": len(results), "next": None, "results": results})
            m = re.match(rf"^{base}versions/([^/]+)/assets/([^/]+)/(download/)?$", path)
            if m and m.group(2) in by_id:
                a = by_id[m.group(2)]
                if m.group(3):
                    self.send_response(302)
                    self.send_header("Location", f"/files/{a['file'].name}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return None
                return self._json(a["metadata"])
            self._json({"detail": "Not found."}, 404)

    return Handler


class Server:
    """`with Server(files, assets) as s:` serves on 127.0.0.1 in a thread; `s.url`. With
    `cut_first=n` the first file transfer stops after n bytes (the connection closes)."""

    def __init__(self, files: dict[str, Path], assets=(), dandiset="000728", cut_first=None):
        self.served = Served()
        cut = [] if cut_first is None else [cut_first]
        handler = make_handler(files, list(assets), dandiset, self.served, cut)
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
