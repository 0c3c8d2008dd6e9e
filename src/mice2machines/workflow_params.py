"""The params of the workflow's rules: the settings each job reads that can change its output.

Snakemake reruns a job whose params changed (rerun trigger ``params``) and compares each value
as written, so a dict whose keys come in another order counts as a change. Every rule of
neural.smk, extract.smk and compare.smk therefore passes one canonical JSON string (sorted
keys) of exactly the settings its job reads (`job_params`); the settings of `RUN_KEYS` (where
and how fast a job runs, or limits it only checks) stay out of it, so changing them reruns
nothing, and the script reads them from the config (`run_settings`). Settings its job does not
read stay out too: a new neural filter does not reconvert the NWB files, new bootstrap or
permutation counts do not reprepare the neural store. Importing this module needs no torch.

    params: cfg=job_params("compare_model", config)
    script: cfg = {**json.loads(snakemake.params.cfg), **run_settings("compare", snakemake.config)}
"""

from __future__ import annotations

import ast
import functools
import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path

#: per config section: the settings that never change a job's output (every ``dask`` key:
#: cluster, worker and thread counts). ``models.max_store_gb`` is a limit the extraction checks;
#: ``models.gpu``/``compare.gpu`` are job resources.
RUN_KEYS: dict[str, tuple[str, ...]] = {
    "neural": ("cell_block",),
    "models": ("device", "writers", "threads", "gpu", "max_store_gb"),
    "compare": ("device", "unit_chunk", "cell_block", "gpu"),
}

#: per config section: the settings that choose which jobs exist (the DAG), not what a job
#: computes; the chosen job's own values (its zoo row) are in its params instead.
DAG_KEYS: dict[str, tuple[str, ...]] = {
    "models": ("table", "only"),
    "compare": ("models",),
}

#: per rule: (config section, the settings of it that the job reads and that can change its
#: output). Rules not listed (stimuli, the Allen rules, dg) build their params themselves.
JOB_KEYS: dict[str, tuple[str, tuple[str, ...]]] = {
    "synthetic_stimuli": ("synthetic", ("seed", "image_height", "image_width")),
    "synthetic_manifest": (
        "synthetic",
        ("areas", "cre_lines", "experiments_per_combination", "cells_per_experiment", "mice"),
    ),
    "synthetic_session": ("synthetic", ("seed", "n_repeats", "drive", "mice")),
    "nwb_to_zarr": (
        "neural",
        (
            "baseline_frames",
            "response_offset_frames",
            "response_frames",
            "percent",
            "trial_window_frames",
            "store_trials",
            "bad_traces",
        ),
    ),
    "population": (
        "neural",
        ("areas", "cre_lines", "reliability_split", "reliability_seed", "min_reliability"),
    ),
    # the cache the weights are fetched into, and recorded in the job's manifest
    "fetch_weights": ("models", ("weights_dir",)),
    "extract_activations": (
        "models",
        (
            "batch_size",
            "precision",
            "store_dtype",
            "compressor",
            "chunk_mb",
            "max_memory_gb",
            "probe_images",
            "layer_types",
            "seed",
        ),
    ),
    "architecture_similarity": ("models", ("archsim",)),
    # plugins: prepare ceils every registered split-half metric
    "compare_prepare": (
        "compare",
        (
            "plugins",
            "groups",
            "min_cells",
            "min_reliability",
            "map_size",
            "map_center",
            "map_normalize",
            "n_splits",
            "seed",
            "rsa_remove_mean_pattern",
            "rsa_crossnobis_partitions",
            "rsa_crossnobis_noise",
            "inter_animal",
            "inter_animal_min_cells",
            "n_folds",
            "ridge_alphas",
            "pls_components",
            "cv_score",
        ),
    ),
    "compare_select": ("compare", ("selection", "seed")),
    "compare_model": (
        "compare",
        (
            "metrics",
            "plugins",
            "seed",
            "n_perm",
            "n_perm_max",
            "n_boot",
            "ci_level",
            "fdr_alpha",
            "cell_metrics_on",
            "n_folds",
            "cv_score",
            "ridge_alphas",
            "pls_components",
            "random_projection",
            "rsa_remove_mean_pattern",
            "map_center",
            "map_normalize",
            "neurn",
            "dtype",
        ),
    ),
    "compare_aggregate": ("compare", ("plugins",)),
    "compare_figures": (
        "compare",
        ("fdr_alpha", "map_center", "map_normalize", "metrics", "plugins"),
    ),
}


def job_settings(rule: str, config: Mapping, **job) -> dict:
    """The settings of ``rule``'s job from a filled config (``validate_config``), plus the
    job's own values (``job``: e.g. its zoo row), which must not reuse a settings name."""
    try:
        section, keys = JOB_KEYS[rule]
    except KeyError:
        raise ValueError(f"no job settings for rule {rule!r}; known: {sorted(JOB_KEYS)}") from None
    out = {key: config[section][key] for key in keys}
    if rule == "synthetic_session" and (out["drive"] or {}).get("kind", "rf") == "rf":
        out["drive"] = {"kind": "rf"}  # mix and neurn shape only a layer drive
    clash = sorted(set(out) & set(job))
    if clash:
        raise ValueError(f"{rule}: job values {clash} would replace settings of {section}")
    return {**out, **job}


def job_params(rule: str, config: Mapping, **job) -> str:
    """`job_settings` as one canonical string (a rule's params: equal settings, equal string)."""
    return canonical(job_settings(rule, config, **job))


def dandi_job(config: Mapping) -> dict:
    """The DANDI settings a session's conversion reads (none for other sources, so their
    params stay as they were)."""
    if config["source"] != "dandi":
        return {}
    return {"unknown_depth": config["dandi"]["unknown_depth"]}


def layer_drive_model(config: Mapping, zoo: Mapping) -> dict | None:
    """What a layer-driven synthetic session reads of the model side: the drive model's zoo row
    and build seed (None for planted receptive fields). ``zoo``: name -> `zoo.ModelSpec`."""
    drive = config["synthetic"]["drive"] or {}
    if drive.get("kind", "rf") != "layer":
        return None
    if drive["model"] not in zoo:
        raise ValueError(f"synthetic.drive.model {drive['model']!r} is not in the models table")
    return {"spec": zoo[drive["model"]].to_dict(), "seed": config["models"]["seed"]}


def run_settings(section: str, config: Mapping) -> dict:
    """The `RUN_KEYS` settings of a config section (a script reads them from the config)."""
    return {
        key: config[section][key] for key in RUN_KEYS.get(section, ()) if key in config[section]
    }


def canonical(settings: Mapping) -> str:
    """One string per set of settings: sorted keys at every level."""
    return json.dumps(settings, sort_keys=True)


# ---------------------------------------------------------------- the package code a job runs

PACKAGE = Path(__file__).resolve().parent

#: modules whose function-level imports a job does not run: `settings` loads other stages'
#: registries only to validate their sections, and a job validates its own section only; the
#: package's `__init__` imports the Python API only when a user calls it
LAZY_IMPORTS_NOT_RUN = frozenset({f"{PACKAGE.name}.settings", PACKAGE.name})
#: modules left out of the code digest: this one decides what a job's params are (its
#: effect on a job is in the params themselves) and a script reads only `run_settings` of it
NOT_JOB_CODE = frozenset({__name__})


def _module_file(name: str) -> Path | None:
    """The source file of a package module name (``mice2machines.neural.nwb``), or None."""
    parts = name.split(".")
    if parts[0] != PACKAGE.name:
        return None
    base = PACKAGE.joinpath(*parts[1:])
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def _names(node: ast.AST, here: list[str]) -> set[str]:
    """Module names one import statement may load (``here``: the importing package's parts)."""
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names}
    base = node.module.split(".") if node.module else []
    if node.level:
        base = here[: len(here) - node.level + 1] + base
    return {".".join(base)} | {".".join([*base, alias.name]) for alias in node.names}


@functools.cache
def _module(path: Path, name: str) -> tuple[frozenset[str], str]:
    """(the package modules a module imports, its digest). Imports anywhere count (lazy ones in
    functions too, except in `LAZY_IMPORTS_NOT_RUN`), with every package whose ``__init__`` an
    import runs. The digest is of the syntax tree without docstrings: comments, formatting and
    docstrings do not change it."""
    tree = ast.parse(path.read_text(), filename=str(path))
    here = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    nodes = tree.body if name in LAZY_IMPORTS_NOT_RUN else list(ast.walk(tree))
    found = set()
    for node in nodes:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            for full in _names(node, here):
                parts = full.split(".")
                found.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (
            isinstance(body, list)
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            node.body = body[1:] or [ast.Pass()]
    digest = hashlib.sha256(ast.dump(tree).encode()).hexdigest()
    found -= NOT_JOB_CODE
    return frozenset(n for n in found if _module_file(n) is not None), digest


def code_modules(script: str | os.PathLike) -> list[str]:
    """The package modules a rule's script runs: those it imports, directly or through other
    package modules, with the packages whose ``__init__`` runs on the way."""
    todo = set(_module(Path(script).resolve(), "__main__")[0])
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        seen.add(name)
        todo |= _module(_module_file(name), name)[0] - seen
    return sorted(seen)


def code_hash(script: str | os.PathLike) -> str:
    """A digest of the code a rule's script runs (the script and its `code_modules`): an edit
    of that code changes it; an edit elsewhere in the package, or of comments, formatting or
    docstrings, does not. A rule passes it as a param, so the params trigger reruns the rule."""
    script = Path(script).resolve()
    parts = [f"script\0{_module(script, '__main__')[1]}"]
    parts += [f"{n}\0{_module(_module_file(n), n)[1]}" for n in code_modules(script)]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]
