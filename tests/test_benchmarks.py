"""The benchmarks run on the GPU machine only, so here they are checked for what breaks them
silently after a refactor: every package name they import or reach through a module alias
must exist, and each one's command line parses."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import subprocess
import sys

import pytest
from conftest import ROOT

SCRIPTS = sorted(p for p in (ROOT / "benchmarks").glob("*.py") if p.name != "common.py")


def _package_references(path):
    """(module, attribute) pairs the script takes from mice2machines."""
    tree = ast.parse(path.read_text())
    aliases, refs = {}, []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("mice2machines"):
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                if importlib.util.find_spec(sub.split(".")[0]) and _is_module(sub):
                    aliases[a.asname or a.name] = sub
                else:
                    refs.append((node.module, a.name))
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("mice2machines"):
                    aliases[a.asname or a.name] = a.name
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in aliases
        ):
            refs.append((aliases[node.value.id], node.attr))
    return refs


def _is_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_benchmark_references_exist(script):
    refs = _package_references(script)
    assert refs, f"{script.name} uses nothing from the package?"
    missing = [
        f"{mod}.{attr}" for mod, attr in refs if not hasattr(importlib.import_module(mod), attr)
    ]
    assert not missing, f"{script.name} refers to names the package no longer has: {missing}"


def test_benchmark_command_lines_parse():
    for script in SCRIPTS:
        res = subprocess.run(
            [sys.executable, str(script), "--help"],
            cwd=script.parent,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert res.returncode == 0 and "usage" in res.stdout.lower(), (script.name, res.stderr)
