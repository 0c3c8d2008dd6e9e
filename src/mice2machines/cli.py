"""``m2m``: score a model, validate inputs, inspect files (``python -m mice2machines.cli``).

    m2m score timm:resnet10t results/neural/population.zarr --out scores.zarr
    m2m validate --config config/config.yaml --model module:nets.py:make_net --neural x.nwb
    m2m inspect results/neural/population.zarr

``score`` is `mice2machines.score` (the workflow's stage functions); ``validate`` checks the
config (every key against its schema), the models table and given rows (builders, modules,
factories, weights names, local files: nothing is built) and each neural source (read, not
converted); ``inspect`` prints `summaries.summarize`. Mistakes are one line each, exit 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

DEFAULT_CONFIG = "config/config.yaml"


def _config_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config", help=f"a workflow config YAML (default: {DEFAULT_CONFIG} when it exists)"
    )


def _config(path: str | None) -> str | None:
    if path is None and Path(DEFAULT_CONFIG).is_file():
        return DEFAULT_CONFIG
    return path


def _settings(pairs: list[str]) -> dict:
    """``key=value`` pairs, values read as YAML (``n_perm=10``, ``metrics=[rsa_pearson]``)."""
    import yaml

    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ValueError(f"--set {pair!r}: expected key=value")
        out[key.strip()] = yaml.safe_load(value)
    return out


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="m2m", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("score", help="score a model on neural data; write the labelled store")
    s.add_argument(
        "model", help="a models-table row: timm:NAME, module:FILE.py:FACTORY, a row name"
    )
    s.add_argument("neural", help="a population store (results/neural/population.zarr)")
    s.add_argument("--out", required=True, help="the store to write (zarr)")
    s.add_argument("--stimuli", help="a stimulus store (default: results/stimuli.zarr beside)")
    s.add_argument("--layers", help="module names, comma-separated, or a layers column")
    s.add_argument("--metrics", help="metrics, comma-separated (default: the config's)")
    s.add_argument("--row", help="more model columns: input_size=64,preprocess=unit")
    s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a compare or models setting (repeatable)")  # fmt: skip
    s.add_argument("--workdir", help="keep the intermediate stores here")
    _config_arg(s)

    v = sub.add_parser("validate", help="check config, models and neural sources, run nothing")
    _config_arg(v)
    v.add_argument("--models", action="append", default=[],
                   help="a models table (repeatable; default: the config's models.table)")  # fmt: skip
    v.add_argument("--model", action="append", default=[], help="a row string (repeatable)")
    v.add_argument("--neural", action="append", default=[], help="a neural source (repeatable)")

    i = sub.add_parser("inspect", help="what a neural source or result store holds")
    i.add_argument("path")
    i.add_argument("--json", action="store_true", help="print JSON")
    return p


def cmd_score(args) -> int:
    from .api import score

    layers = args.layers
    if layers and ":" not in layers and layers != "all":
        layers = [x.strip() for x in layers.split(",") if x.strip()]
    metrics = args.metrics.split(",") if args.metrics else None
    ds = score(
        args.model, args.neural, args.stimuli, layers, metrics, row=args.row,
        config=_config(args.config), workdir=args.workdir, out=args.out, **_settings(args.set),
    )  # fmt: skip
    print(f"wrote {args.out}: {dict(ds.sizes)}")
    return 0


def _check(label: str, fn) -> bool:
    """Run one check; print ``ok`` or the error on one line."""
    try:
        detail = fn()
    except Exception as err:  # every failure is the user's input: report it, go on
        print(f"error: {label}: {err}")
        return False
    print(f"ok: {label}" + (f" ({detail})" if detail else ""))
    return True


def cmd_validate(args) -> int:
    from .api import load_config, parse_row
    from .models import zoo
    from .summaries import summarize

    config_path = _config(args.config)
    state = {}

    def config():
        state["config"] = load_config(config_path)
        return config_path or "defaults"

    def table(path):
        specs = zoo.read_zoo(path)
        zoo.validate_zoo_deep(specs, path)
        return f"{len(specs)} models"

    def row(text):
        spec = parse_row(text)
        zoo.validate_zoo_deep([spec])
        return spec.name

    def neural(path):
        s = summarize(path)
        return f"{s['kind']}" + (f", {s['cells']} cells" if "cells" in s else "")

    good = _check("config", config)
    tables = args.models or ([state["config"]["models"]["table"]] if good else [])
    for path in tables:
        good &= _check(f"models table {path}", lambda p=path: table(p))
    for text in args.model:
        good &= _check(f"model {text}", lambda t=text: row(t))
    for path in args.neural:
        good &= _check(f"neural {path}", lambda p=path: neural(p))
    return 0 if good else 1


def cmd_inspect(args) -> int:
    from .summaries import format_summary, summarize

    summary = summarize(args.path)
    print(json.dumps(summary, indent=1, default=str) if args.json else format_summary(summary))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    command = {"score": cmd_score, "validate": cmd_validate, "inspect": cmd_inspect}
    try:
        return command[args.command](args)
    except (ValueError, FileNotFoundError, RuntimeError, TypeError) as err:
        print(f"m2m {args.command}: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
