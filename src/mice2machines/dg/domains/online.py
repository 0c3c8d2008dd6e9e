"""Online domains, fetched from their published sets (for users; run on a login node).

torchvision's MNIST, SVHN, USPS, and MNIST-M: each file's md5 is verified and no partial file is
ever left under its final name.
"""

from __future__ import annotations

import gzip
import os
import shutil
import tarfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...download import DownloadError, check
from ...download import download as fetch
from . import Domain, register_domain
from .format import DomainFileError, make_dataset, provenance, to_rgb32


@dataclass(frozen=True)
class Resource:
    """One published file: its name, the URLs to try in order, and its published md5."""

    filename: str
    urls: tuple[str, ...]
    md5: str


def _mirrored(filename: str, md5: str, bases: Sequence[str]) -> Resource:
    return Resource(filename, tuple(b.rstrip("/") + "/" + filename for b in bases), md5)


_MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist",
    "http://yann.lecun.com/exdb/mnist",
)
_USPS_BASE = ("https://www.csie.ntu.edu.tw/~cjlin/libsvmtools/datasets/multiclass",)
_SVHN_BASE = ("http://ufldl.stanford.edu/housenumbers",)
_MNISTM_BASE = ("https://github.com/liyxi/mnist-m/releases/download/data",)

# Published files and md5s (the ones torchvision checks; MNIST-M: liyxi/mnist-m's release).
RESOURCES: dict[str, tuple[Resource, ...]] = {
    "mnist_full": (
        _mirrored("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873", _MNIST_MIRRORS),
        _mirrored("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432", _MNIST_MIRRORS),
        _mirrored("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3", _MNIST_MIRRORS),
        _mirrored("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c", _MNIST_MIRRORS),
    ),
    "svhn": (
        _mirrored("train_32x32.mat", "e26dedcc434d2e4c54c9b2d4a06d8373", _SVHN_BASE),
        _mirrored("test_32x32.mat", "eb5a983be6a315427106f1b164d9cef3", _SVHN_BASE),
    ),
    "usps": (
        _mirrored("usps.bz2", "ec16c51db3855ca6c91edd34d0e9b197", _USPS_BASE),
        _mirrored("usps.t.bz2", "8ea070ee2aca1ac39742fdd1ef5ed118", _USPS_BASE),
    ),
    "mnistm": (
        _mirrored("mnist_m_train.pt.tar.gz", "191ed53db9933bd85cc9700558847391", _MNISTM_BASE),
        _mirrored("mnist_m_test.pt.tar.gz", "e11cb4d7fff76d7ec588b1134907db59", _MNISTM_BASE),
    ),
}


# What each domain is read as (recorded in its provenance) and the description stored with it.
_ABOUT: dict[str, tuple[str, str]] = {
    "mnist_full": ("torchvision MNIST", "MNIST (torchvision), 28 -> 32 px, train + test"),
    "svhn": ("SVHN format 2 (.mat)", "SVHN cropped digits, 32 px, train + test"),
    "usps": ("torchvision USPS", "USPS handwritten digits, 16 -> 32 px, train + test"),
    "mnistm": ("MNIST-M .pt release", "MNIST-M, 28 -> 32 px, train + test"),
}


def download(
    resource: Resource,
    directory: str | os.PathLike,
    timeout: float = 60.0,
    log: Callable[[str], None] = print,
) -> Path:
    """Fetch one file into ``directory`` and verify its md5; returns its final path.

    A verified file already there is reused; each mirror is tried in turn (see
    `mice2machines.download`: nothing partial is left under the final name)."""
    dest = Path(directory) / resource.filename
    if dest.exists():
        try:
            check(dest, md5=resource.md5)
            return dest
        except DownloadError as err:
            log(f"{err}; downloading it again")
    return fetch(
        resource.urls,
        dest,
        md5=resource.md5,
        timeout=timeout,
        hint=f"place the file at {dest} by hand, or set dg.mirrors in the config",
        log=log,
    )


def _resources(
    name: str, mirrors: Sequence[str] | None, resources: Sequence[Resource] | None
) -> tuple[Resource, ...]:
    res = tuple(resources) if resources is not None else RESOURCES[name]
    if mirrors:
        res = tuple(_mirrored(r.filename, r.md5, mirrors) for r in res)
    return res


def _fetch_all(name: str, download_dir, mirrors, resources, log) -> dict[str, Path]:
    return {
        r.filename: download(r, download_dir, log=log) for r in _resources(name, mirrors, resources)
    }


def _online_provenance(name: str, files: dict[str, Path], source: str) -> str:
    from ...io import sha256_file

    inputs = {f: sha256_file(p) for f, p in files.items()}
    return provenance(name, {}, inputs, source)


def _concat(parts: list[tuple[np.ndarray, np.ndarray]]):
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    split = np.concatenate([np.full(len(p[1]), s, np.uint8) for s, p in enumerate(parts)])
    return images, labels, split


def _online_dataset(name: str, files: dict[str, Path], parts: list):
    """The dataset of an online domain: its (images, labels) parts, train then test, one
    split each, with its description and the provenance of the files it was read from."""
    source, description = _ABOUT[name]
    images, labels, split = _concat(parts)
    return make_dataset(
        images,
        labels,
        split,
        domain=name,
        provenance=_online_provenance(name, files, source),
        description=description,
    )


def _rgb32_parts(load: Callable[[Path], tuple[np.ndarray, np.ndarray]], files: dict[str, Path]):
    """(images at 32 px RGB, labels) of each file, in order, as read by ``load``."""
    return [(to_rgb32(x), y) for x, y in (load(p) for p in files.values())]


def _gunzip(src: Path, dest: Path) -> Path:
    """Decompress ``src`` to ``dest`` atomically (skipped when dest exists)."""
    from ...io import atomic_path

    if not dest.exists():
        with atomic_path(dest) as tmp, gzip.open(src, "rb") as fin, open(tmp, "wb") as fout:
            shutil.copyfileobj(fin, fout)
    return dest


def _torchvision_splits(dataset, root, paths, name: str) -> list:
    """(images, labels) of the train and test split of a torchvision dataset class.

    `paths` names the file behind each split, for the error when torchvision cannot read it.
    """
    parts = []
    for train, path in zip((True, False), paths, strict=True):
        try:
            d = dataset(str(root), train=train, download=False)
        except Exception as err:
            raise DomainFileError(f"{path}: torchvision could not read {name} ({err})") from err
        parts.append((to_rgb32(np.asarray(d.data)), np.asarray(d.targets, np.int64)))
    return parts


def build_mnist_full(download_dir, mirrors=None, resources=None, log=print):
    """torchvision's MNIST (60000 train + 10000 test), parsed by torchvision itself."""
    import torchvision

    raw = Path(download_dir) / "MNIST" / "raw"  # torchvision's own layout
    files = _fetch_all("mnist_full", raw, mirrors, resources, log)
    for p in files.values():
        _gunzip(p, p.with_suffix(""))
    parts = _torchvision_splits(torchvision.datasets.MNIST, download_dir, (raw, raw), "MNIST")
    return _online_dataset("mnist_full", files, parts)


def _load_mat(path: Path) -> tuple[np.ndarray, np.ndarray]:
    import scipy.io

    try:
        mat = scipy.io.loadmat(path)
        x, y = mat["X"], mat["y"].astype(np.int64).ravel()
    except Exception as err:
        raise DomainFileError(f"{path}: not a readable SVHN .mat file ({err})") from err
    y[y == 10] = 0  # SVHN labels the digit 0 as 10
    return np.transpose(x, (3, 0, 1, 2)), y  # (32, 32, 3, N) -> (N, 32, 32, 3)


def build_svhn(download_dir, mirrors=None, resources=None, log=print):
    """SVHN cropped digits (73257 train + 26032 test; 'extra' is not used)."""
    files = _fetch_all("svhn", Path(download_dir) / "svhn", mirrors, resources, log)
    parts = _rgb32_parts(_load_mat, files)
    return _online_dataset("svhn", files, parts)


def build_usps(download_dir, mirrors=None, resources=None, log=print):
    """USPS (7291 train + 2007 test, 16 x 16), parsed by torchvision's USPS class."""
    import torchvision

    root = Path(download_dir) / "usps"
    files = _fetch_all("usps", root, mirrors, resources, log)
    parts = _torchvision_splits(torchvision.datasets.USPS, root, tuple(files.values()), "USPS")
    return _online_dataset("usps", files, parts)


def _load_mnistm_pt(archive: Path) -> tuple[np.ndarray, np.ndarray]:
    import torch

    try:
        with tarfile.open(archive) as tar:
            member = next(m for m in tar.getmembers() if m.name.endswith(".pt") and m.isfile())
            data, targets = torch.load(tar.extractfile(member), weights_only=True)
    except Exception as err:
        raise DomainFileError(f"{archive}: not a readable MNIST-M archive ({err})") from err
    return np.asarray(data), np.asarray(targets, np.int64)


def build_mnistm(download_dir, mirrors=None, resources=None, log=print):
    """MNIST-M (Ganin et al.; 59001 train + 9001 test, 28 x 28 RGB) from its published release."""
    files = _fetch_all("mnistm", Path(download_dir) / "mnistm", mirrors, resources, log)
    parts = _rgb32_parts(_load_mnistm_pt, files)
    return _online_dataset("mnistm", files, parts)


register_domain(Domain("mnist_full", build_mnist_full, True, "torchvision MNIST, 70000 digits"))
register_domain(Domain("svhn", build_svhn, True, "SVHN cropped house-number digits"))
register_domain(Domain("usps", build_usps, True, "USPS handwritten digits"))
register_domain(Domain("mnistm", build_mnistm, True, "MNIST-M (published release)"))
