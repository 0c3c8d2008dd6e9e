from snakemake.utils import min_version

min_version("8.0")


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"


rule all:
    default_target: True
    input:
        all_targets,


if SOURCE == "table":

    include: "workflow/rules/table.smk"

else:

    include: "workflow/rules/neural.smk"


include: "workflow/rules/extract.smk"
include: "workflow/rules/compare.smk"
include: "workflow/rules/dg.smk"
include: "workflow/rules/report.smk"


# rule names under `resources:` must be rules of this workflow (a typo would be ignored)
_unknown = sorted(set(config["resources"]) - {r.name for r in workflow.rules})
if _unknown:
    raise ValueError(f"config resources: no rule named {', '.join(_unknown)}")


# a job cancelled with scancel (sacct: "CANCELLED by <uid>") must fail, not hang the run
from mice2machines.cluster import slurm_states_first_word

slurm_states_first_word()


# Every script rule reruns when the package code its script runs changes: a digest of that
# code (the script and the package modules it imports, without docstrings) is one more param.
from mice2machines.workflow_params import code_hash

for _rule in workflow.rules:
    if _rule.script:
        _script = _rule.basedir.join(_rule.script).get_path_or_uri(secret_free=False)
        _rule.set_params(package_code=code_hash(_script))
