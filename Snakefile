from snakemake.utils import min_version

min_version("8.0")


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"


rule all:
    default_target: True
    input:
        all_targets,


include: "workflow/rules/neural.smk"
include: "workflow/rules/extract.smk"
include: "workflow/rules/compare.smk"
include: "workflow/rules/dg.smk"
include: "workflow/rules/report.smk"


# rule names under `resources:` must be rules of this workflow (a typo would be ignored)
_unknown = sorted(set(config["resources"]) - {r.name for r in workflow.rules})
if _unknown:
    raise ValueError(f"config resources: no rule named {', '.join(_unknown)}")
