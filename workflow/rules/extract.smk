"""Model zoo -> weights (login node) -> one activation store per model; architecture similarity."""

# Params: each rule passes its model's zoo row and the models settings its job reads, as one
# sorted JSON string (mice2machines.workflow_params), so reordering the config or the table's
# columns reruns nothing. Left out, read by the scripts from the config, because they cannot
# change a store: models.device, writers and threads (where and how fast it runs), gpu (a
# resource), max_store_gb (a limit the job only checks) and, for extraction, weights_dir (the
# weights are verified by sha256; fetch_weights, whose manifest records the path, keeps it).

import re

from mice2machines.models.zoo import local_files, read_zoo, validate_zoo_once
from mice2machines.workflow_params import job_params

MODELS_CFG = config["models"]
ZOO_TABLE = (
    MODELS_CFG["table"]
    if os.path.exists(MODELS_CFG["table"])
    else workflow_path(MODELS_CFG["table"])
)
ZOO = {spec.name: spec for spec in read_zoo(ZOO_TABLE)}
# architectures, weights names, modules, factories and local files exist (nothing is built);
# checked when the DAG is planned, not again inside each submitted job, and once per zoo and
# installed packages (a marker under .snakemake/mice2machines)
if workflow.is_main_process:
    validate_zoo_once(list(ZOO.values()), ZOO_TABLE, ".snakemake/mice2machines")
_unknown = sorted(set(MODELS_CFG["only"]) - set(ZOO))
if _unknown:
    raise ValueError(f"models.only names models not in {ZOO_TABLE}: {_unknown}")
MODEL_NAMES = [n for n in ZOO if not MODELS_CFG["only"] or n in MODELS_CFG["only"]]
ARCHSIM = f"{RESULTS}/archsim"


wildcard_constraints:
    model="|".join(re.escape(n) for n in ZOO),


TARGETS.append(
    lambda: expand(f"{RESULTS}/activations/{{model}}.zarr", model=MODEL_NAMES)
    + [f"{ARCHSIM}/similarity.tsv", f"{ARCHSIM}/similarity.png"]
)


# local files a row reads (file:/ckpt: weights, a module's .py file, a TorchScript file) are
# inputs, so a checkpoint of this project's own training is upstream and an edit reruns.
LOCAL_WEIGHTS = {name: local_files(spec) for name, spec in ZOO.items()}
GPU_RESOURCES = {"gpu": MODELS_CFG["gpu"]} if MODELS_CFG["gpu"] else {}


localrules:
    fetch_weights,


rule fetch_weights:
    output:
        f"{RESULTS}/weights/{{model}}.json",
    log:
        f"{LOGS}/fetch_weights/{{model}}.log",
    priority: CRITICAL_PATH
    conda:
        MAIN_ENV
    resources:
        mem_mb=1000,
        runtime=60,
    params:
        cfg=lambda wc: job_params("fetch_weights", config, spec=ZOO[wc.model].to_dict()),
    script:
        "../scripts/fetch_weights.py"


rule extract_activations:
    input:
        stimuli=f"{RESULTS}/stimuli.zarr",
        weights=rules.fetch_weights.output[0],
        local=lambda wc: LOCAL_WEIGHTS[wc.model],
    output:
        store=directory(f"{RESULTS}/activations/{{model}}.zarr"),
    log:
        f"{LOGS}/extract/{{model}}.log",
    priority: CRITICAL_PATH
    conda:
        MAIN_ENV
    threads: MODELS_CFG["threads"]
    resources:
        **GPU_RESOURCES,
        mem_mb=res(
            "extract_activations",
            "mem_mb",
            int(MODELS_CFG["max_memory_gb"] * 1024) + 4000,
        ),
        runtime=res("extract_activations", "runtime", 120),
    params:
        cfg=lambda wc: job_params(
            "extract_activations", config, spec=ZOO[wc.model].to_dict()
        ),
    script:
        "../scripts/extract_activations.py"


rule architecture_similarity:
    output:
        similarity=f"{ARCHSIM}/similarity.tsv",
        heatmap=f"{ARCHSIM}/similarity.png",
        sequences=f"{ARCHSIM}/sequences.tsv",
        shortlist=f"{ARCHSIM}/shortlist.tsv",
    log:
        f"{LOGS}/architecture_similarity.log",
    conda:
        MAIN_ENV
    resources:
        mem_mb=2000,
        runtime=20,
    params:
        cfg=job_params(
            "architecture_similarity",
            config,
            specs=[ZOO[n].to_dict() for n in MODEL_NAMES],
        ),
    script:
        "../scripts/architecture_similarity.py"
