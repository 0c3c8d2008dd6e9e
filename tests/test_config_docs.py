"""config/README.md shows each section's key table exactly as the schemas generate it, and
every schema key is documented (the schemas are the one home of defaults and meanings)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mice2machines import settings

README = Path(__file__).resolve().parents[1] / "config" / "README.md"
DOCUMENTED = ("config", *settings.SECTIONS, "neurn")


def readme_block(text: str, name: str) -> str | None:
    """The text between ``<!-- keys: name -->`` and the next ``<!-- /keys -->``."""
    match = re.search(rf"<!-- keys: {re.escape(name)} -->\n(.*?)<!-- /keys -->", text, re.S)
    return None if match is None else match.group(1).strip()


def properties(node: dict, path: str = ""):
    """(dotted path, schema) of every property: nested objects' and those of ``$defs``."""
    for key, sub in node.get("properties", {}).items():
        yield f"{path}{key}", sub
        yield from properties(sub, f"{path}{key}.")
    for key, sub in node.get("$defs", {}).items():
        yield from properties(sub, f"{path}$defs.{key}.")


def resolved(root: dict, node: dict) -> dict:
    """``node``, or what its local ``$ref`` points at when it holds nothing else."""
    ref = node.get("$ref")
    if set(node) != {"$ref"} or not ref.startswith("#/"):
        return node
    for part in ref.removeprefix("#/").split("/"):
        root = root[part]
    return root


@pytest.mark.parametrize("name", DOCUMENTED)
def test_readme_table_is_generated(name):
    block = readme_block(README.read_text(), name)
    command = f"python -m mice2machines.settings table {name}"
    assert block is not None, f"config/README.md lacks <!-- keys: {name} --> ... <!-- /keys -->"
    assert block == settings.key_table(name), (
        f"config/README.md's {name} table differs from the schema (`{command}`): run "
        "`python -m mice2machines.settings readme config/README.md`"
    )


@pytest.mark.parametrize("name", DOCUMENTED)
def test_every_key_has_a_description(name):
    root = settings.schema(name)
    missing = []
    for path, prop in properties(root):
        if not str(resolved(root, prop).get("description", "")).strip():
            missing.append(path)
    assert not missing, f"{name}.schema.yaml: keys without a description: {missing}"


def test_readme_update_rewrites_a_stale_table(tmp_path):
    stale = tmp_path / "README.md"
    stale.write_text("intro\n<!-- keys: dask -->\n| old |\n<!-- /keys -->\noutro\n")
    assert settings.update_readme(stale) == ["dask"]
    assert readme_block(stale.read_text(), "dask") == settings.key_table("dask")
    assert stale.read_text().startswith("intro\n") and stale.read_text().endswith("outro\n")
    assert settings.update_readme(stale) == []


def test_every_schema_is_documented():
    schemas = {p.name.removesuffix(".schema.yaml") for p in settings.SCHEMAS.glob("*.schema.yaml")}
    assert schemas == set(DOCUMENTED)
