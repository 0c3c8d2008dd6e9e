"""Comparison: neural groups and maps -> neuron selection -> one metric job per model ->
aggregated store, tidy CSV and report figures (mice2machines.compare)."""

# Params: each rule passes the compare settings its job reads, as one sorted JSON string
# (mice2machines.workflow_params), so reordering the config reruns nothing and a setting
# reruns only the jobs that read it: compare_prepare none of the metric, bootstrap and null
# settings (metrics, n_boot, n_perm, ...), compare_select only selection and seed. Left out,
# read by the scripts from the config, because they cannot change a result: compare.device,
# unit_chunk (units per streamed chunk), cell_block (cells compare_prepare reads at a time),
# gpu (a resource) and every dask setting.

from mice2machines.compare import settings as compare_settings
from mice2machines.report import figure_files, registered
from mice2machines.workflow_params import job_params

COMPARE = compare_settings(config.get("compare"))
CMP = f"{RESULTS}/compare"


# compare.models, else the zoo's models (MODEL_NAMES of extract.smk)
COMPARE_MODELS = list(COMPARE["models"] or globals().get("MODEL_NAMES", []))
# every figure of the report (mice2machines.report.registry); this stage draws "compare"'s
FIGURES = registered(COMPARE["metrics"], dg=bool(config["dg"]["archs"]))
COMPARE_FIGURES = figure_files(FIGURES, RESULTS, "compare")
COMPARE_GPU = {"gpu": int(COMPARE["gpu"])} if COMPARE["gpu"] else {}


TARGETS.append(
    lambda: [f"{CMP}/scores.zarr", f"{CMP}/scores.csv", f"{CMP}/cells.csv"]
    + COMPARE_FIGURES
)


rule compare_prepare:
    input:
        population=f"{RESULTS}/neural/population.zarr",
        stimuli=f"{RESULTS}/stimuli.zarr",
    output:
        store=directory(f"{CMP}/neural.zarr"),
    log:
        f"{LOGS}/compare/prepare.log",
    priority: CRITICAL_PATH
    conda:
        MAIN_ENV
    resources:
        mem_mb=mem_mb_of("compare_prepare"),
        runtime=runtime_of("compare_prepare", 60),
    params:
        cfg=job_params("compare_prepare", config),
    script:
        "../scripts/compare_prepare.py"


rule compare_select:
    input:
        neural=rules.compare_prepare.output.store,
    output:
        table=f"{CMP}/selected_neurons.tsv",
    log:
        f"{LOGS}/compare/select.log",
    priority: CRITICAL_PATH
    conda:
        MAIN_ENV
    resources:
        mem_mb=mem_mb_of("compare_select"),
        runtime=runtime_of("compare_select", 30),
    params:
        cfg=job_params("compare_select", config),
    script:
        "../scripts/compare_select.py"


rule compare_model:
    input:
        neural=rules.compare_prepare.output.store,
        selected=rules.compare_select.output.table,
        activations=f"{RESULTS}/activations/{{model}}.zarr",
    output:
        store=directory(f"{CMP}/models/{{model}}.zarr"),
    log:
        f"{LOGS}/compare/model/{{model}}.log",
    priority: CRITICAL_PATH
    conda:
        MAIN_ENV
    threads: res("compare_model", "threads", 2)
    resources:
        **COMPARE_GPU,
        mem_mb=mem_mb_of("compare_model"),
        runtime=runtime_of("compare_model", 120),
    params:
        cfg=job_params("compare_model", config),
    script:
        "../scripts/compare_model.py"


rule compare_aggregate:
    input:
        stores=expand(f"{CMP}/models/{{model}}.zarr", model=COMPARE_MODELS),
    output:
        store=directory(f"{CMP}/scores.zarr"),
        csv=f"{CMP}/scores.csv",
        cells=f"{CMP}/cells.csv",
    log:
        f"{LOGS}/compare/aggregate.log",
    priority: CRITICAL_PATH
    conda:
        MAIN_ENV
    resources:
        mem_mb=mem_mb_of("compare_aggregate"),
        runtime=runtime_of("compare_aggregate", 30),
    params:
        cfg=job_params("compare_aggregate", config, models=COMPARE_MODELS),
    script:
        "../scripts/compare_aggregate.py"


rule compare_figures:
    input:
        store=rules.compare_aggregate.output.store,
        csv=rules.compare_aggregate.output.csv,
        neural=rules.compare_prepare.output.store,
        selected=rules.compare_select.output.table,
        activations=expand(
            f"{RESULTS}/activations/{{model}}.zarr", model=COMPARE_MODELS
        ),
    output:
        figures=[
            report(f, caption=f"../report/{s.caption}", category=s.section)
            for s in FIGURES
            if s.stage == "compare"
            for f in s.files(RESULTS)[:1]
        ],
        svg=[s.files(RESULTS)[1] for s in FIGURES if s.stage == "compare"],
    log:
        f"{LOGS}/compare/figures.log",
    priority: CRITICAL_PATH
    conda:
        MAIN_ENV
    threads: res("compare_figures", "threads", 2)
    resources:
        mem_mb=mem_mb_of("compare_figures"),
        runtime=runtime_of("compare_figures", 15),
    params:
        cfg=job_params("compare_figures", config),
    script:
        "../scripts/compare_figures.py"
