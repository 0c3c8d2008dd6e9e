"""Neural data from a response table (source: table): the table and its stimulus set ->
the population and stimulus stores the NWB path writes (mice2machines.neural.table)."""

# The table was checked when the workflow was planned (common.smk: TABLE), so a bad table
# fails before any job. Params: those of rule population (neural.smk), the same settings.

import json

from mice2machines.workflow_params import job_params

TABLE_CFG = config["table"]
TABLE_STIMULI = [TABLE_CFG["stimuli"]] if TABLE_CFG["stimuli"] else []


TARGETS.append(lambda: [f"{RESULTS}/neural/population.zarr", f"{RESULTS}/stimuli.zarr"])


rule table_population:
    input:
        table=TABLE_CFG["path"],
    output:
        store=directory(f"{RESULTS}/neural/population.zarr"),
    log:
        f"{LOGS}/population.log",
    priority: CRITICAL_PATH
    conda:
        MAIN_ENV
    resources:
        mem_mb=8000,
        runtime=60,
    params:
        cfg=job_params("population", config),
    script:
        "../scripts/table_population.py"


rule table_stimuli:
    input:
        table=TABLE_CFG["path"],
        stimuli=TABLE_STIMULI,
    output:
        store=directory(f"{RESULTS}/stimuli.zarr"),
    log:
        f"{LOGS}/stimuli.log",
    priority: CRITICAL_PATH
    conda:
        MAIN_ENV
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        cfg=json.dumps(TABLE_CFG, sort_keys=True),
    script:
        "../scripts/table_stimuli.py"
