"""Domain generalization (NeuRN).

Digit domains -> one training job per (arch, variant, source, seed) -> one results table
(accuracy mean +- std over seeds, NeuRN minus baseline paired by seed).
"""

from mice2machines.dg import jobs as dg_jobs
from mice2machines.dg.domains import OFFLINE as DG_OFFLINE
from mice2machines.dg.domains import ONLINE as DG_ONLINE

DG = config["dg"]
DGR = f"{RESULTS}/dg"
DG_JOB = "{arch}/{variant}/{source}/seed{seed}"
DG_GPU = {"gpu": DG["gpu"]} if DG["gpu"] else {}


DG_STORE = f"{DGR}/domains/{{domain}}.zarr"
DG_METRICS = expand(
    f"{DGR}/runs/{DG_JOB}/metrics.json",
    arch=DG["archs"],
    variant=DG["variants"],
    source=DG["sources"],
    seed=DG["seeds"],
)


TARGETS.append(
    lambda: [
        f"{DGR}/table.csv",
        f"{DGR}/table.md",
        f"{DGR}/accuracy.png",
        f"{DGR}/models.tsv",
    ]
)


localrules:
    dg_domain_online,


rule dg_domain_offline:
    output:
        directory(DG_STORE),
    log:
        f"{LOGS}/dg/domain_{{domain}}.log",
    wildcard_constraints:
        domain="|".join(DG_OFFLINE),
    conda:
        MAIN_ENV
    resources:
        mem_mb=res("dg_domain_offline", "mem_mb", 2000),
        runtime=res("dg_domain_offline", "runtime", 20),
    params:
        settings=lambda wc: dg_jobs.canonical(DG["domain_params"].get(wc.domain, {})),
    script:
        "../scripts/dg_domain.py"


# Online sets are fetched on the login node (compute nodes often have no internet). They have
# no params: download_dir and mirrors (read from the config) cannot change the md5-checked files.
rule dg_domain_online:
    output:
        directory(DG_STORE),
    log:
        f"{LOGS}/dg/domain_{{domain}}.log",
    wildcard_constraints:
        domain="|".join(DG_ONLINE),
    conda:
        MAIN_ENV
    resources:
        mem_mb=res("dg_domain_online", "mem_mb", 6000),
        runtime=res("dg_domain_online", "runtime", 120),
    script:
        "../scripts/dg_domain.py"


rule dg_train:
    input:
        source=lambda wc: DG_STORE.format(domain=wc.source),
        targets=expand(DG_STORE, domain=DG["targets"]),
    output:
        metrics=f"{DGR}/runs/{DG_JOB}/metrics.json",
        checkpoint=f"{DGR}/runs/{DG_JOB}/best.pt",
    log:
        f"{LOGS}/dg/train/{{arch}}_{{variant}}_{{source}}_seed{{seed}}.log",
    wildcard_constraints:
        arch="|".join(DG["archs"]),
        variant="baseline|neurn",
        source="|".join(DG["sources"]),
        seed=r"\d+",
    conda:
        MAIN_ENV
    threads: DG["train"]["threads"] or 1
    resources:
        **DG_GPU,
        mem_mb=res("dg_train", "mem_mb", 4000),
        runtime=res("dg_train", "runtime", 240),
    params:
        # what determines the result: device, threads, eval_batch_size change reruns nothing
        cfg=lambda wc: dg_jobs.result_params(
            DG, wc.arch, wc.variant, wc.source, wc.seed
        ),
        targets=DG["targets"],
    script:
        "../scripts/dg_train.py"


rule dg_results:
    input:
        metrics=DG_METRICS,
    output:
        csv=report(
            f"{DGR}/table.csv",
            caption="../report/dg_table.rst",
            category="Domain generalization",
        ),
        md=f"{DGR}/table.md",
        png=report(
            f"{DGR}/accuracy.png",
            caption="../report/dg_accuracy.rst",
            category="Domain generalization",
        ),
        manifest=f"{DGR}/models.tsv",
    log:
        f"{LOGS}/dg/results.log",
    conda:
        MAIN_ENV
    resources:
        mem_mb=res("dg_results", "mem_mb", 2000),
        runtime=res("dg_results", "runtime", 10),
    params:
        confidence=DG["confidence"],
    script:
        "../scripts/dg_results.py"
