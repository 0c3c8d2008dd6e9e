"""NeuRN settings: the one parser of every form a NeuRN setting takes, without torch.

`mice2machines.neurn` needs torch; the model table is read at Snakemake parse time, so the
parsing lives here. The defaults and allowed values come from ``schemas/neurn.schema.yaml``.

    settings(None) / settings(False) / settings("none")  -> None (no NeuRN)
    settings(True) / settings("default") / settings({})   -> every default
    settings({"kernel_size": 3})                          -> defaults with k = 3
    settings("k=3,max=channel,pad=zeros")                 -> the zoo table's column form
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

from .settings import ConfigError, check, defaults, schema

#: the floor of NeuRN's divisor (its maximum): an all-constant image maps to 0, not NaN
EPS = 1e-12
#: zoo-column spellings of "no NeuRN" and "the defaults"
OFF = ("none", "no", "false", "-", "")
ON = ("default", "yes", "true")
#: short keys of the zoo column
ALIASES = {"k": "kernel_size", "max": "max_over", "pad": "padding"}


@functools.cache
def _defaults() -> tuple[tuple[str, object], ...]:
    return tuple(defaults("neurn").items())


def default() -> dict:
    """A fresh copy of the default settings."""
    return dict(_defaults())


def allowed(key: str) -> tuple:
    """The allowed values of an enum setting (``max_over``, ``padding``)."""
    return tuple(schema("neurn")["properties"][key]["enum"])


def parse(text: str) -> dict | None:
    """The zoo table's form: ``none`` | ``default`` | ``k=3,max=channel,pad=zeros``."""
    text = (text or "").strip()
    if text in OFF:
        return None
    if text in ON:
        return {}
    out = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        key = ALIASES.get(key.strip(), key.strip())
        if not sep or key not in default():
            raise ConfigError(f"neurn: cannot parse {part!r} in {text!r}; keys {sorted(default())}")
        try:
            out[key] = int(value) if key == "kernel_size" else value.strip()
        except ValueError:
            raise ConfigError(f"neurn {text!r}: kernel_size must be an integer") from None
    return out


def settings(value: Mapping | bool | str | None) -> dict | None:
    """The full NeuRN settings of ``value`` (a partial dict, a bool, None or the zoo form),
    defaults filled in and validated against the schema; None when NeuRN is off."""
    if value is None or value is False:
        return None
    if value is True:
        return default()
    if isinstance(value, str):
        value = parse(value)
        if value is None:
            return None
    if not isinstance(value, Mapping):
        raise ConfigError(f"neurn: expected a dict, a bool, None or a string, got {value!r}")
    check("neurn", value)
    return {**default(), **value}
