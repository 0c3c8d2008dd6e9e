"""The report: every registered figure (mice2machines.report.registry), the architecture
matrix, the DG plot and table, and the workflow description in one self-contained page,
``report.html`` under results_dir (offline; no Snakemake --report run needed)."""

TARGETS.append(lambda: [f"{RESULTS}/report.html"])


rule report:
    input:
        figures=COMPARE_FIGURES,
        csv=rules.compare_aggregate.output.csv,
        archsim=rules.architecture_similarity.output.similarity,
        dg_metrics=DG_METRICS,
        captions=workflow_path("workflow/report/workflow.rst"),
    output:
        html=f"{RESULTS}/report.html",
        figures=figure_files(FIGURES, RESULTS, "report"),
    log:
        f"{LOGS}/report.log",
    priority: CRITICAL_PATH
    conda:
        MAIN_ENV
    resources:
        mem_mb=res("report", "mem_mb", 2000),
        runtime=res("report", "runtime", 15),
    script:
        "../scripts/report.py"
