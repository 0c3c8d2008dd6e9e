"""NWB download over real HTTP on loopback: complete, truncated, wrong content, skip."""

import http.server
import threading
from functools import partial

import pytest

from mice2machines.neural.allen import DownloadError, download, is_complete


class _Handler(http.server.SimpleHTTPRequestHandler):
    truncate = False

    def log_message(self, *args):
        pass

    def do_GET(self):
        if self.path.startswith("/short/"):
            body = (self.server.root / self.path.split("/")[-1]).read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.close_connection = True
            return
        super().do_GET()


@pytest.fixture
def server(tmp_path, nwb_paths):
    root = tmp_path / "srv"
    root.mkdir()
    (root / "good.nwb").write_bytes(nwb_paths[0].read_bytes())
    (root / "html.nwb").write_text("<html>Access denied</html>")
    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), partial(_Handler, directory=str(root))
    )
    httpd.root = root
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_download_complete(server, tmp_path, nwb_paths):
    dest = tmp_path / "out" / "1.nwb"
    msgs = []
    download(f"{server}/good.nwb", dest, log=msgs.append)
    assert dest.read_bytes() == nwb_paths[0].read_bytes()
    assert is_complete(dest)
    assert not list(dest.parent.glob("*.part"))
    # a second call keeps the complete file without fetching
    download(f"{server}/missing.nwb", dest, log=msgs.append)
    assert "already complete" in msgs[-1]


@pytest.mark.parametrize(
    "path, message",
    [
        ("short/good.nwb", "download failed"),
        ("html.nwb", "not a readable HDF5"),
        ("missing.nwb", "404"),
    ],
)
def test_failed_download_leaves_nothing(server, tmp_path, path, message):
    dest = tmp_path / "out" / "2.nwb"
    with pytest.raises(DownloadError, match=message) as err:
        download(f"{server}/{path}", dest, retries=2, backoff_s=0, log=lambda m: None)
    assert "2.nwb" in str(err.value)
    assert not dest.exists()
    assert list(dest.parent.iterdir()) == []


def test_incomplete_existing_file_is_replaced(server, tmp_path, nwb_paths):
    dest = tmp_path / "3.nwb"
    dest.write_bytes(nwb_paths[0].read_bytes()[:1000])
    assert not is_complete(dest)
    download(f"{server}/good.nwb", dest, log=lambda m: None)
    assert is_complete(dest)


def test_one_downloader_sha256_prefix_mirrors_and_one_line_error(server, tmp_path, nwb_paths):
    """The shared downloader behind every caller: a sha256 prefix, mirror fallback, one line."""
    import hashlib

    from mice2machines import download as dl

    digest = hashlib.sha256(nwb_paths[0].read_bytes()).hexdigest()
    dest = tmp_path / "w" / "good.bin"
    urls = [f"{server}/missing.nwb", f"{server}/good.nwb"]
    assert dl.download(urls, dest, sha256=digest[:8], log=None) == dest
    assert dl.check(dest, sha256=digest) == ["sha256"]
    with pytest.raises(dl.DownloadError, match="invalid hash") as err:
        dl.download(urls, tmp_path / "x" / "bad.bin", sha256="0" * 8, log=None)
    msg = str(err.value)
    assert "\n" not in msg and "missing.nwb: HTTP Error 404" in msg and "Offline:" in msg
    assert list((tmp_path / "x").iterdir()) == []
    assert DownloadError is dl.DownloadError
