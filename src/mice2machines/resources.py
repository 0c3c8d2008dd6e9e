"""Memory the workflow's jobs declare, from the sizes of their inputs and the attempt.

Snakemake sizes a directory input (every zarr store) as 4 KB, so the rules reading stores
call :func:`mem_mb` instead: each rule's formula lives in :data:`MEMORY` (a base plus a factor
per input, in MB of the input's uncompressed arrays, read from the stores' metadata only), and
the result is multiplied by the attempt, so a retry (profiles/slurm ``retries``) asks for more.
A ``resources: {rule: {mem_mb: N}}`` config entry replaces the formula's first attempt.
``python -m mice2machines.resources`` prints the table (config/README.md, Resources).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

MB = 1e6


@dataclass(frozen=True)
class Formula:
    """``(base + sum(factor * MB of input)) * attempt``; ``largest`` inputs count their largest
    array only (a job streams one layer at a time); ``arrays`` inputs only the arrays of these
    names (the ones the job reads)."""

    base: int
    factors: dict[str, float] = field(default_factory=dict)
    largest: frozenset[str] = frozenset()
    arrays: dict[str, tuple[str, ...]] = field(default_factory=dict)
    why: str = ""


#: per-rule memory (MB): measured peaks at release shape (benchmarks/release.py) with headroom
MEMORY: dict[str, Formula] = {
    "nwb_to_zarr": Formula(1500, {"nwb": 1.5}, why="one session's traces and its store"),
    "population": Formula(
        2000,
        {"stores": 1.5},
        arrays={"stores": ("responses", "blank_responses")},  # neural.population.READS
        why="the sessions' responses, concatenated (their trials are not read)",
    ),
    "compare_prepare": Formula(
        2000,
        {"population": 0.5},
        why="one block of compare.cell_block cells (about 0.4 GB at 2048) and every cell's "
        "trial means and maps (about 0.3 x its responses)",
    ),
    "compare_select": Formula(
        1000,
        {"neural": 12.0},
        why="every cell's map in float64 several times over (the full PCA's copies and U, "
        "UMAP's neighbour graph): about 8.5 x the neural store at 63,000 cells",
    ),
    "compare_model": Formula(
        4000,
        {"neural": 3.0, "activations": 4.0},
        largest=frozenset({"activations"}),
        why="the neural store, one layer's activations and the RF maps of at most 65536 "
        "units (about 2 GB, whatever compare.unit_chunk)",
    ),
    "compare_aggregate": Formula(1500, {"stores": 2.0}, why="every model's scores"),
    "compare_figures": Formula(
        2500, {"store": 2.0, "neural": 1.0}, why="the aggregated scores and the neural store"
    ),
}


@dataclass(frozen=True)
class ArrayMeta:
    """One array of a zarr store, from its metadata: shape, dimension names, dtype."""

    shape: tuple[int, ...]
    dims: tuple[str, ...]
    dtype: np.dtype

    @property
    def mb(self) -> float:
        return math.prod(self.shape) * self.dtype.itemsize / MB


def _meta(node: Mapping) -> ArrayMeta:
    shape = tuple(int(n) for n in node["shape"])
    dims = tuple(str(d) for d in (node.get("dimension_names") or [""] * len(shape)))
    return ArrayMeta(shape, dims, _dtype(node.get("data_type")))


def _dtype(name) -> np.dtype:
    try:
        return np.dtype(name if isinstance(name, str) else "float64")
    except TypeError:
        return np.dtype("float64")  # strings and other object-like types: 8 B a value


def store_arrays(path: str | os.PathLike) -> dict[str, ArrayMeta]:
    """Every array of a zarr v3 store by its path in the store, read from the metadata only
    (the root's consolidated metadata, else each node's zarr.json; chunks are not visited)."""
    p = Path(path)
    root = p / "zarr.json"
    if not root.is_file():
        return {}  # not written yet (planning) or not a zarr v3 store
    nodes = (json.loads(root.read_text()).get("consolidated_metadata") or {}).get("metadata")
    if not nodes:
        nodes = {}
        for meta in p.glob("**/zarr.json"):
            rel = meta.parent.relative_to(p).as_posix()
            if meta.parent != p and "/c/" not in f"/{rel}/":
                nodes[rel] = json.loads(meta.read_text())
    return {k: _meta(v) for k, v in nodes.items() if v.get("node_type") == "array"}


def array_mb(path: str | os.PathLike, names=None) -> list[float]:
    """MB of each array of a zarr store (uncompressed, from its metadata; only the arrays
    called ``names``, if given), or of a file."""
    p = Path(path)
    if p.is_file():
        return [p.stat().st_size / MB]
    arrays = store_arrays(p).items()
    return [a.mb for k, a in arrays if names is None or k.rpartition("/")[2] in names]


def input_mb(paths, largest: bool = False, names=None) -> float:
    """Total MB of the arrays of ``paths`` (one path or several; only the arrays called
    ``names``, if given), or the largest array."""
    paths = [paths] if isinstance(paths, str | os.PathLike) else list(paths)
    sizes = [s for p in paths for s in array_mb(p, names)]
    if not sizes:
        return 0.0
    return max(sizes) if largest else sum(sizes)


def mem_mb(rule: str, inputs: Mapping, attempt: int = 1, override: int | None = None) -> int:
    """Memory (MB) a job of ``rule`` declares for ``attempt``; ``inputs``: name -> path(s),
    e.g. Snakemake's ``input``; ``override``: the config's first-attempt value."""
    if override is not None:
        return int(override) * int(attempt)
    f = MEMORY[rule]
    total = f.base + sum(
        k * input_mb(inputs[name], name in f.largest, f.arrays.get(name))
        for name, k in f.factors.items()
        if name in inputs.keys()
    )
    return int(math.ceil(total)) * int(attempt)


def table() -> str:
    """The formulas as a Markdown table (config/README.md)."""
    rows = ["| rule | first attempt, MB | what it holds |", "|---|---|---|"]
    for rule, f in MEMORY.items():
        terms = [str(f.base)]
        for name, k in f.factors.items():
            term = f"{k:g} x {'largest array of ' if name in f.largest else ''}`{name}`"
            if name in f.arrays:
                term += f" ({', '.join(f'`{a}`' for a in f.arrays[name])})"
            terms.append(term)
        rows.append(f"| `{rule}` | {' + '.join(terms)} | {f.why} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(table())
