"""Model zoo -> weights (login node) -> one activation store per model; architecture similarity."""

import re

from mice2machines.models.zoo import read_zoo

MODELS_CFG = config["models"]
ZOO_TABLE = (
    MODELS_CFG["table"]
    if os.path.exists(MODELS_CFG["table"])
    else workflow_path(MODELS_CFG["table"])
)
ZOO = {spec.name: spec for spec in read_zoo(ZOO_TABLE)}
_unknown = sorted(set(MODELS_CFG["only"]) - set(ZOO))
if _unknown:
    raise ValueError(f"models.only names models not in {ZOO_TABLE}: {_unknown}")
MODEL_NAMES = [n for n in ZOO if not MODELS_CFG["only"] or n in MODELS_CFG["only"]]
ARCHSIM = f"{RESULTS}/archsim"
EXTRACT_SETTINGS = {
    k: MODELS_CFG[k]
    for k in (
        "batch_size",
        "precision",
        "store_dtype",
        "compressor",
        "chunk_mb",
        "max_store_gb",
        "max_memory_gb",
        "device",
        "writers",
        "probe_images",
    )
}


wildcard_constraints:
    model="|".join(re.escape(n) for n in ZOO),


TARGETS.append(
    lambda: expand(f"{RESULTS}/activations/{{model}}.zarr", model=MODEL_NAMES)
    + [f"{ARCHSIM}/similarity.tsv", f"{ARCHSIM}/similarity.png"]
)


# file:/ckpt: weights are inputs, so a checkpoint of this project's own training is upstream.
LOCAL_WEIGHTS = {
    name: [str(spec.weights_path)] if spec.weights_path is not None else []
    for name, spec in ZOO.items()
}
GPU_RESOURCES = {"gpu": MODELS_CFG["gpu"]} if MODELS_CFG["gpu"] else {}


localrules:
    fetch_weights,


rule fetch_weights:
    output:
        f"{RESULTS}/weights/{{model}}.json",
    log:
        f"{LOGS}/fetch_weights/{{model}}.log",
    conda:
        MAIN_ENV
    resources:
        mem_mb=1000,
        runtime=60,
    params:
        spec=lambda wc: ZOO[wc.model].to_dict(),
        weights_dir=MODELS_CFG["weights_dir"],
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
        spec=lambda wc: ZOO[wc.model].to_dict(),
        settings=EXTRACT_SETTINGS,
        weights_dir=MODELS_CFG["weights_dir"],
        layer_types=MODELS_CFG["layer_types"],
        seed=MODELS_CFG["seed"],
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
        specs=[ZOO[n].to_dict() for n in MODEL_NAMES],
        cfg=MODELS_CFG["archsim"],
    script:
        "../scripts/architecture_similarity.py"
