"""Digit domains for the domain-generalization stage: one registry, one stored format.

A domain is registered by a module of this package that calls `register_domain` (``offline``:
built from data inside installed wheels; ``online``: downloaded published sets); every module
here is imported when the package is, so adding a domain is adding one module. Every builder
returns the same xarray Dataset (see `format`), written as a zarr store by `write_domain`.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field

from .format import (
    IMAGE_SIZE,
    NUM_CLASSES,
    SPLIT_TEST,
    SPLIT_TRAIN,
    DomainFileError,
    describe,
    domain_arrays,
    domain_checksum,
    load_domain,
    make_dataset,
    to_rgb32,
    validate_domain,
    write_domain,
)


@dataclass(frozen=True)
class Domain:
    """A registered domain: builder, whether it needs the internet, one-line description.

    Offline builders take keyword settings (``defaults`` fill the ones not given); online
    builders take the download directory first."""

    name: str
    builder: Callable
    online: bool
    description: str
    defaults: dict = field(default_factory=dict)


DOMAINS: dict[str, Domain] = {}


def register_domain(domain: Domain) -> Domain:
    """Add a domain to the registry (its name must be new)."""
    if domain.name in DOMAINS:
        raise ValueError(f"domain {domain.name!r} is already registered")
    DOMAINS[domain.name] = domain
    return domain


def _load_builtin() -> None:
    """Import every module of this package (in name order), so each registers its domains."""
    for info in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{info.name}")


_load_builtin()

from .offline import blend_mnistm, build_syndigits, render_digit  # noqa: E402
from .online import RESOURCES, DownloadError, Resource, download  # noqa: E402

OFFLINE = tuple(n for n, d in DOMAINS.items() if not d.online)
ONLINE = tuple(n for n, d in DOMAINS.items() if d.online)


def build_domain(name: str, download_dir: str | os.PathLike | None = None, **params):
    """Build a registered domain. Offline: ``params`` go to the builder (e.g. n_per_class,
    seed). Online: needs ``download_dir``; ``params`` may give ``mirrors`` (base URLs)."""
    if name not in DOMAINS:
        raise ValueError(f"unknown domain {name!r}; choose one of {sorted(DOMAINS)}")
    dom = DOMAINS[name]
    if dom.online:
        if download_dir is None:
            raise ValueError(f"domain {name!r} is downloaded: give download_dir")
        return dom.builder(download_dir, **params)
    return dom.builder(**{**dom.defaults, **params})


__all__ = [
    "DOMAINS",
    "IMAGE_SIZE",
    "NUM_CLASSES",
    "OFFLINE",
    "ONLINE",
    "RESOURCES",
    "SPLIT_TEST",
    "SPLIT_TRAIN",
    "Domain",
    "DomainFileError",
    "DownloadError",
    "Resource",
    "blend_mnistm",
    "build_domain",
    "build_syndigits",
    "describe",
    "domain_arrays",
    "domain_checksum",
    "download",
    "load_domain",
    "make_dataset",
    "register_domain",
    "render_digit",
    "to_rgb32",
    "validate_domain",
    "write_domain",
]
