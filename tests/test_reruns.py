"""Reruns of exactly what changed: edits of a completed tiny workflow against the jobs that a
dry run plans (`--rerun-triggers mtime params input code`, as the profiles set them)."""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import ROOT

from mice2machines import workflow_params as wp

pytestmark = pytest.mark.workflow

TINY = ROOT / "tests" / "data" / "tiny.yaml"
UNTIL = ["--until", "compare_aggregate"]  # neural, extract and compare stages; no figures, DG
TRIGGERS = ["--rerun-triggers", "mtime", "params", "input", "code"]
COPY_IGNORE = shutil.ignore_patterns(
    "results", "resources", "logs", ".snakemake", ".git", ".venv*", "benchmarks", "tests",
    "__pycache__", ".pytest_cache", ".ruff_cache", "*.egg-info", "profiles",
)  # fmt: skip
COMPARE = ["compare_prepare", "compare_select", "compare_model", "compare_aggregate"]


def _snakemake(wd: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """snakemake on the copied repository (its Snakefile and package), under a hard timeout."""
    env = dict(os.environ, PYTHONPATH=str(wd / "src"))
    cmd = ["timeout", "-k", "30", str(timeout), sys.executable, "-m", "snakemake", "--cores", "2"]
    cmd += ["--configfile", "config/config.yaml", "config/tiny.yaml", *UNTIL, *args]
    return subprocess.run(cmd, cwd=wd, env=env, capture_output=True, text=True)


def planned(wd: Path) -> dict[str, int]:
    """{rule: jobs} that a dry run plans."""
    proc = _snakemake(wd, "-n", *TRIGGERS, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    table = re.search(r"^job\s+count\n-+\s+-+\n(.*?)^total\s+\d+", proc.stdout, re.M | re.S)
    if table is None:
        assert "Nothing to be done" in proc.stdout + proc.stderr, proc.stdout[-3000:]
        return {}
    return {r: int(n) for r, n in re.findall(r"^(\w+)\s+(\d+)$", table.group(1), re.M)}


def _reversed(node):
    if isinstance(node, dict):
        return {k: _reversed(node[k]) for k in reversed(list(node))}
    return node


def _config_edit(changes: dict | None = None, reverse: bool = False):
    """Settings changed in the last config file (tiny.yaml, which wins), or every mapping of
    both config files written with its keys in reverse order."""

    def edit(wd: Path) -> None:
        for name in ("config.yaml", "tiny.yaml"):
            path = wd / "config" / name
            cfg = yaml.safe_load(path.read_text())
            if name == "tiny.yaml":
                for section, values in (changes or {}).items():
                    cfg.setdefault(section, {}).update(copy.deepcopy(values))
            path.write_text(yaml.safe_dump(_reversed(cfg) if reverse else cfg, sort_keys=False))

    return edit


def _source_edit(module: str, text: str):
    def edit(wd: Path) -> None:
        with open(wd / "src" / "mice2machines" / module, "a") as f:
            f.write(text)

    return edit


CODE = "\n\ndef _an_edit():\n    return 1\n"
COMMENT = "\n# a comment only\n"
#: (what is edited, edit, {rule: jobs} a dry run then plans); edits are undone after each row
EDITS = [
    ("config keys in reverse order", _config_edit(reverse=True), {}),
    ("models.writers, models.threads", _config_edit({"models": {"writers": 1, "threads": 1}}), {}),
    ("dask.n_workers", _config_edit({"dask": {"n_workers": 3}}), {}),
    ("neural.cell_block", _config_edit({"neural": {"cell_block": 5}}), {}),
    (
        "compare.cell_block, compare.unit_chunk",
        _config_edit({"compare": {"cell_block": 3, "unit_chunk": 100}}),
        {},
    ),
    (
        "compare.n_boot",
        _config_edit({"compare": {"n_boot": 7}}),
        {"compare_model": 1, "compare_aggregate": 1},
    ),
    (
        "neural.min_reliability",
        _config_edit({"neural": {"min_reliability": 0.05}}),
        {"population": 1, **dict.fromkeys(COMPARE, 1)},
    ),
    (
        "code of compare/stream.py",
        _source_edit("compare/stream.py", CODE),
        {"compare_model": 1, "compare_aggregate": 1},
    ),
    # compare_prepare ceils every registered metric: the registry's metric modules, and what
    # they import (the bootstrap among them), are its code too
    (
        "code of compare/bootstrap.py",
        _source_edit("compare/bootstrap.py", CODE),
        dict.fromkeys(COMPARE, 1),
    ),
    (
        "code of neural/population.py",
        _source_edit("neural/population.py", CODE),
        {"population": 1, "stimuli": 1, **dict.fromkeys(COMPARE, 1), "extract_activations": 1},
    ),
    ("a comment in neural/convert.py", _source_edit("neural/convert.py", COMMENT), {}),
    (
        "code of models/extract.py",
        _source_edit("models/extract.py", CODE),
        {"extract_activations": 1, "compare_model": 1, "compare_aggregate": 1},
    ),
]


@pytest.fixture(scope="module")
def completed(tmp_path_factory) -> Path:
    """A copy of the repository with the tiny workflow run to completion in it."""
    wd = Path(shutil.copytree(ROOT, tmp_path_factory.mktemp("reruns") / "wf", ignore=COPY_IGNORE))
    shutil.copy(TINY, wd / "config" / "tiny.yaml")
    proc = _snakemake(wd, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert planned(wd) == {}
    return wd


@pytest.mark.parametrize("what,edit,expected", EDITS, ids=[e[0] for e in EDITS])
def test_edit_reruns_exactly_what_it_touches(completed, what, edit, expected):
    wd = completed
    saved = {p: p.read_bytes() for p in [*(wd / "config").iterdir(), *(wd / "src").rglob("*.py")]}
    try:
        edit(wd)
        assert planned(wd) == expected, what
    finally:
        for path, data in saved.items():
            if path.read_bytes() != data:
                path.write_bytes(data)


def test_code_hash_follows_imports(tmp_path):
    """The digest covers the modules a script imports (lazy ones too), not the rest of the
    package, and ignores docstrings and comments."""
    script = ROOT / "workflow" / "scripts" / "nwb_to_zarr.py"
    mods = wp.code_modules(script)
    assert "mice2machines.neural.convert" in mods and "mice2machines.neural.nwb" in mods
    assert not any(m.startswith(("mice2machines.compare", "mice2machines.dg")) for m in mods)
    assert "mice2machines.workflow_params" not in mods
    # synthetic sessions run the layer drive (function-level imports of models and compare)
    synth = wp.code_modules(ROOT / "workflow" / "scripts" / "synthetic_session.py")
    assert {"mice2machines.synthetic.drive", "mice2machines.models.hooks"} <= set(synth)
    a = tmp_path / "a.py"
    a.write_text('"""doc"""\nfrom mice2machines.neural import nwb\nx = 1\n')
    b = tmp_path / "b.py"
    b.write_text('"""other doc"""\n# comment\nfrom mice2machines.neural import nwb\n\nx = (1)\n')
    c = tmp_path / "c.py"
    c.write_text("from mice2machines.neural import nwb\nx = 2\n")
    assert wp.code_hash(a) == wp.code_hash(b) != wp.code_hash(c)
    assert wp.code_modules(a) == [
        "mice2machines",
        "mice2machines.neural",
        "mice2machines.neural.labels",  # imported by nwb
        "mice2machines.neural.nwb",
    ]
