"""Config validation, shared paths and input functions."""

import os
import sys
from pathlib import Path

SRC = str(Path(workflow.basedir) / "src")
if SRC not in sys.path:
    sys.path.insert(0, SRC)

from mice2machines.settings import validate_config

# the package's schemas (workflow/schemas) fill every default and name the key of a mistake
validate_config(config)

MAIN_ENV = "../../envs/main.yaml"
ALLENSDK_ENV = "../../envs/allensdk.yaml"

RESULTS = config["results_dir"].rstrip("/")
LOGS = config["logs_dir"].rstrip("/")

# The comparison's chain (sessions, their stores, the neural preparation and selection, the
# weights and extractions, the comparisons, their aggregate, figures and the report) runs
# before DG training, which fills the cores the chain leaves free: the demo's wall time is
# that chain, and DG jobs left waiting would otherwise start the extractions late.
CRITICAL_PATH = 1

# Each stage file appends a zero-argument function returning its final targets.
TARGETS = []


def all_targets(wildcards):
    out = []
    for fn in TARGETS:
        out.extend(fn())
    return out


def res(rule_name, key, default):
    """Per-rule resource from config['resources'][rule_name][key], else default."""
    return config.get("resources", {}).get(rule_name, {}).get(key, default)


def mem_mb_of(rule_name):
    """A rule's mem_mb as a function of its inputs' sizes and the attempt
    (mice2machines.resources.MEMORY); config['resources'][rule_name]['mem_mb'] replaces the
    first attempt's."""
    from mice2machines.resources import mem_mb

    override = res(rule_name, "mem_mb", None)
    return lambda wildcards, input, attempt: mem_mb(rule_name, input, attempt, override)


def runtime_of(rule_name, default):
    """A rule's runtime (minutes), config['resources'] first, times the attempt."""
    minutes = res(rule_name, "runtime", default)
    return lambda wildcards, attempt: minutes * attempt


# ---------------------------------------------------------------- neural data sources

SOURCE = config["source"]


def workflow_path(p):
    """A config path relative to the workflow directory, made absolute; bare names stay."""
    if os.path.isabs(p) or "/" not in p:
        return p
    return str(Path(workflow.basedir) / p)


if SOURCE == "synthetic":
    RAW = f"{RESULTS}/synthetic/ophys_experiment_data"
elif SOURCE == "dandi":
    RAW = f"{config['dandi']['cache_dir'].rstrip('/')}/sessions"
else:
    RAW = f"{config['allen']['cache_dir'].rstrip('/')}/ophys_experiment_data"

MANIFEST = f"{RESULTS}/manifest.tsv"

if SOURCE == "table":
    from mice2machines.neural.table import validate as validate_table

    # a bad table or stimulus set fails here, naming the file and the key, before any job
    # (once, when the workflow is planned: cluster jobs do not read the whole table again)
    TABLE = validate_table(config) if workflow.is_main_process else None


def synthetic_table():
    from mice2machines.synthetic import experiment_table

    return experiment_table(config["synthetic"])


def experiment_ids(wildcards=None):
    """Experiment ids of the run: static for synthetic data, from discovery for Allen data."""
    if SOURCE == "synthetic":
        return [int(e) for e in synthetic_table().experiment_id]
    from mice2machines.neural.allen import read_manifest

    discovery = (
        checkpoints.dandi_manifest if SOURCE == "dandi" else checkpoints.allen_manifest
    )
    manifest = discovery.get().output.manifest
    return [r["experiment_id"] for r in read_manifest(manifest)]


STREAM = SOURCE == "dandi" and config["dandi"]["stream"]


def session_input(eid):
    """A session's inputs: its NWB file and, for DANDI, the manifest (depth, URL, digest);
    a streamed DANDI session has only the manifest."""
    out = {} if STREAM else {"nwb": f"{RAW}/{eid}.nwb"}
    if SOURCE == "dandi":
        out["manifest"] = MANIFEST
    return out


def experiment_stores(wildcards):
    return expand(
        f"{RESULTS}/neural/experiments/{{eid}}.zarr", eid=experiment_ids(wildcards)
    )


def first_experiment_input(wildcards):
    return session_input(experiment_ids(wildcards)[0])
