"""The one source of every setting: the JSON schemas in `mice2machines/schemas/`.

Each config section has one schema (``<section>.schema.yaml``) holding its keys, their
defaults and their documentation; the workflow validates with it and the package reads its
defaults from it, so no default is written twice. ``{$ref: neurn.schema.yaml}`` shares one
definition between sections. Allowed values that come from a registry (the metrics, DG
architectures and domains) are filled in when a schema is loaded.

    section("compare", cfg)   # validated copy of cfg with every default filled in
    defaults("neurn")         # {"kernel_size": 5, "max_over": "image", "padding": "reflect"}
    validate_config(config)   # the whole config, as the workflow does before planning
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable, Mapping
from pathlib import Path

import yaml

SCHEMAS = Path(__file__).parent / "schemas"
#: config sections with a schema of their own, in the order they are checked
SECTIONS = ("synthetic", "allen", "dandi", "table", "neural", "dask", "models", "compare", "dg")


class ConfigError(ValueError):
    """A config value the schema refuses: names the key, the value and the allowed form."""


def _compare_metrics(schema: dict, cfg: Mapping | None) -> None:
    from .compare.registry import METRICS, load_plugins

    load_plugins((cfg or {}).get("plugins") or ())
    prop = schema["properties"]["metrics"]
    prop["items"]["enum"] = list(METRICS)
    prop["default"] = [name for name, spec in METRICS.items() if spec.default]


def _dg_registries(schema: dict, cfg: Mapping | None) -> None:
    from .dg.domains import DOMAINS
    from .dg.jobs import ARCHS

    schema["$defs"]["domain"]["enum"] = list(DOMAINS)
    schema["$defs"]["arch"]["enum"] = list(ARCHS)


#: per section: functions that fill registry values into its schema (given the raw section)
REGISTRY_HOOKS: dict[str, list[Callable[[dict, Mapping | None], None]]] = {
    "compare": [_compare_metrics],
    "dg": [_dg_registries],
}


@functools.cache
def _raw(name: str) -> dict:
    path = SCHEMAS / f"{name}.schema.yaml"
    if not path.exists():
        raise ConfigError(f"no schema for config section {name!r} ({path})")
    return _inline(yaml.safe_load(path.read_text()))


def _inline(node):
    """Replace ``{$ref: other.schema.yaml}`` by that schema (without its $schema key)."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.endswith(".schema.yaml"):
            other = copy.deepcopy(_raw(ref.removesuffix(".schema.yaml")))
            other.pop("$schema", None)
            return {**other, **{k: v for k, v in node.items() if k != "$ref"}}
        return {k: _inline(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_inline(v) for v in node]
    return node


def schema(name: str, cfg: Mapping | None = None) -> dict:
    """The schema of a section, with registry values filled in (``cfg``: the raw section,
    for plugins it names)."""
    out = copy.deepcopy(_raw(name))
    for hook in REGISTRY_HOOKS.get(name, ()):
        hook(out, cfg)
    return out


def _fill(node: dict, value):
    """Defaults of ``node`` filled into ``value`` (objects recursively)."""
    if value is None and "default" in node:
        value = copy.deepcopy(node["default"])
    props = node.get("properties")
    if props and (value is None or isinstance(value, dict)):
        out = dict(value or {})
        for key, sub in props.items():
            if key not in out:
                if "default" in sub or ("properties" in sub and sub.get("type") == "object"):
                    out[key] = _fill(sub, None)
            elif isinstance(out[key], dict) and "properties" in sub:
                out[key] = _fill(sub, out[key])
        return out
    return value


def defaults(name: str) -> dict:
    """Every default of a section."""
    return _fill(schema(name), {})


def _message(section: str, err) -> str:
    keys = [str(p) for p in err.absolute_path]
    path = ".".join(keys if section == "config" else [section, *keys]) or "(top level)"
    sub = err.schema if isinstance(err.schema, dict) else {}
    if err.validator == "additionalProperties":
        allowed = sorted(sub.get("properties", {}))
        return f"config {path}: {err.message}; allowed keys: {', '.join(allowed)}"
    form = {k: sub[k] for k in ("type", "enum", "minimum", "maximum", "pattern") if k in sub}
    hint = f"; allowed: {form}" if form else ""
    return f"config {path}: {err.message}{hint}"


def check(name: str, cfg: Mapping | None, node: dict | None = None) -> None:
    """Raise ConfigError (one line: key, value, allowed form) if ``cfg`` breaks the schema."""
    import jsonschema

    node = node if node is not None else schema(name, cfg)
    errors = sorted(
        jsonschema.Draft202012Validator(node).iter_errors(dict(cfg or {})),
        key=lambda e: list(e.absolute_path),
    )
    if errors:
        raise ConfigError(_message(name, errors[0]))


def _trial_window(s: dict) -> None:
    lo, hi = s["trial_window_frames"]
    if lo >= hi:
        raise ConfigError(
            f"config neural.trial_window_frames: {[lo, hi]} is not [first, last) frames "
            "around onset with first < last (e.g. [-30, 45])"
        )


#: checks a schema cannot state (relations between values), per section, after defaults
RELATION_CHECKS = {"neural": (_trial_window,)}


def section(name: str, cfg: Mapping | None = None) -> dict:
    """A validated copy of config section ``name`` with every default filled in."""
    node = schema(name, cfg)
    check(name, cfg, node)
    out = _fill(node, copy.deepcopy(dict(cfg or {})))
    for relation in RELATION_CHECKS.get(name, ()):
        relation(out)
    return out


def _check_dirs(config: dict) -> None:
    """``results_dir`` and ``logs_dir``: a directory, not empty and not the filesystem root."""
    for key in ("results_dir", "logs_dir"):
        value = config[key]
        if not value.strip() or Path(value).resolve() == Path(Path.cwd().anchor):
            raise ConfigError(
                f"config {key}: {value!r} would put outputs at the filesystem root; give a "
                "directory such as 'results'"
            )


def validate_config(config: dict) -> dict:
    """The whole config: the top level, then every section, defaults filled in place."""
    check("config", config)
    for key, value in _fill(schema("config"), {}).items():
        config.setdefault(key, value)
    _check_dirs(config)
    for name in SECTIONS:
        config[name] = section(name, config.get(name))
    return config


def _cell(value) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, width=1000, sort_keys=False).strip()
    return f"`{text.removesuffix('...').strip()}`"


def _local(root: dict, node: dict) -> dict:
    """``node`` with a local ``{$ref: "#/..."}`` resolved in ``root`` (its own keys win)."""
    ref = node.get("$ref") if isinstance(node, dict) else None
    if not (isinstance(ref, str) and ref.startswith("#/")):
        return node
    target = root
    for part in ref[2:].split("/"):
        target = target[part]
    return {**_local(root, target), **{k: v for k, v in node.items() if k != "$ref"}}


def _shown_default(sub: dict, nested: bool, required: bool) -> str:
    """The default cell: ``required``, nothing, or the default (of an object only what its
    key rows do not already show)."""
    if required:
        return "required"
    if "default" not in sub:
        return ""
    value = sub["default"]
    props = sub.get("properties", {})
    if nested and isinstance(value, dict):
        if all(k in props and props[k].get("default", ...) == v for k, v in value.items()):
            return ""
    return _cell(value)


def key_table(name: str) -> str:
    """The Markdown table of a section's keys: key, default, meaning (from its schema).

    Nested objects get a row when they have a description, then one row per key; local
    ``$ref``s are resolved; a required key shows ``required`` as its default."""
    rows = ["| key | default | meaning |", "|---|---|---|"]
    root = schema(name)

    def walk(node: dict, prefix: str) -> None:
        required = set(node.get("required", ()))
        for key, sub in node.get("properties", {}).items():
            sub = _local(root, sub)
            path = f"{prefix}{key}"
            nested = bool(sub.get("properties")) and sub.get("type") == "object"
            if nested and not sub.get("description"):
                walk(sub, f"{path}.")
                continue
            about = " ".join(str(sub.get("description", "")).split()).replace("|", "\\|")
            values = _local(root, sub.get("items", {})) if "items" in sub else sub
            names = _local(root, sub.get("propertyNames", {}))
            if "enum" in values:
                allowed = ", ".join(f"`{v}`" for v in values["enum"])
                about = f"{about} (one of {allowed})" if about else f"one of {allowed}"
            elif "enum" in names:
                allowed = ", ".join(f"`{v}`" for v in names["enum"])
                about = f"{about} (keys: {allowed})" if about else f"keys: {allowed}"
            default = _shown_default(sub, nested, key in required)
            rows.append(f"| `{path}` | {default} | {about} |")
            if nested:
                walk(sub, f"{path}.")

    walk(root, "")
    return "\n".join(rows)


def update_readme(path: str | Path) -> list[str]:
    """Rewrite every ``<!-- keys: SECTION -->`` ... ``<!-- /keys -->`` block of a Markdown
    file with the section's generated table; returns the sections that changed."""
    import re

    path = Path(path)
    text = path.read_text()
    changed = []

    def fill(match: re.Match) -> str:
        name = match.group(1)
        table = key_table(name)
        if match.group(2).strip() != table:
            changed.append(name)
        return f"<!-- keys: {name} -->\n{table}\n<!-- /keys -->"

    new = re.sub(r"<!-- keys: (\S+) -->\n(.*?)<!-- /keys -->", fill, text, flags=re.S)
    if new != text:
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(new)
        tmp.replace(path)
    return changed


def main(argv: list[str] | None = None) -> int:
    """``defaults SECTION`` prints a section's defaults as YAML; ``table SECTION`` its keys
    as a Markdown table (as config/README.md shows them); ``readme FILE`` rewrites the key
    tables of a Markdown file in place."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m mice2machines.settings")
    parser.add_argument("what", choices=["defaults", "table", "readme"])
    parser.add_argument("target", help="a section (defaults, table) or a Markdown file (readme)")
    args = parser.parse_args(argv)
    if args.what == "readme":
        changed = update_readme(args.target)
        print(f"{args.target}: " + (", ".join(changed) + " updated" if changed else "up to date"))
        return 0
    names = ["config", *SECTIONS, "neurn"]
    if args.target not in names:
        parser.error(f"unknown section {args.target!r}; choose one of {names}")
    if args.what == "defaults":
        print(yaml.safe_dump(defaults(args.target), sort_keys=False).rstrip())
    else:
        print(key_table(args.target))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
