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

import json
from collections.abc import Mapping

#: per config section: the settings that never change a job's output (every ``dask`` key:
#: cluster, worker and thread counts). ``models.max_store_gb`` is a limit the extraction checks;
#: ``models.gpu``/``compare.gpu`` are job resources.
RUN_KEYS: dict[str, tuple[str, ...]] = {
    "neural": ("cell_block",),
    "models": ("device", "writers", "threads", "gpu", "max_store_gb"),
    "compare": ("device", "unit_chunk", "gpu"),
}

#: per rule: (config section, the settings of it that the job reads and that can change its
#: output). Rules not listed (stimuli, the Allen rules, dg) build their params themselves.
JOB_KEYS: dict[str, tuple[str, tuple[str, ...]]] = {
    "synthetic_stimuli": ("synthetic", ("seed", "image_height", "image_width")),
    "synthetic_manifest": (
        "synthetic",
        ("areas", "cre_lines", "experiments_per_combination", "cells_per_experiment"),
    ),
    "synthetic_session": ("synthetic", ("seed", "n_repeats", "drive")),
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
