"""Neural data: synthetic, Allen or DANDI sessions -> NWB -> per-experiment zarr -> population."""

# Params: each rule passes the settings its job reads, as one sorted JSON string
# (mice2machines.workflow_params), so reordering the config reruns nothing. Left out, read by
# the scripts from the config, because they cannot change a result: neural.cell_block (cells
# per streamed block and zarr chunk) and every dask setting (cluster, workers, threads). The
# models table path and weights_dir of a layer drive stay out too: its zoo row and seed are in.

from mice2machines.neural.dandi import discovery_params as dandi_discovery_params
from mice2machines.workflow_params import dandi_job, job_params, layer_drive_model


wildcard_constraints:
    eid=r"\d+",


TARGETS.append(
    lambda: [f"{RESULTS}/neural/population.zarr", f"{RESULTS}/stimuli.zarr", MANIFEST]
)


if SOURCE == "synthetic":

    rule synthetic_stimuli:
        output:
            f"{RESULTS}/synthetic/natural_scenes_template.npy",
        log:
            f"{LOGS}/synthetic_stimuli.log",
        priority: CRITICAL_PATH
        conda:
            MAIN_ENV
        resources:
            mem_mb=1000,
            runtime=10,
        params:
            cfg=job_params("synthetic_stimuli", config),
        script:
            "../scripts/synthetic_stimuli.py"

    rule synthetic_manifest:
        output:
            manifest=MANIFEST,
        log:
            f"{LOGS}/synthetic_manifest.log",
        priority: CRITICAL_PATH
        conda:
            MAIN_ENV
        resources:
            mem_mb=500,
            runtime=5,
        params:
            cfg=job_params("synthetic_manifest", config),
        script:
            "../scripts/synthetic_manifest.py"

    rule synthetic_session:
        input:
            template=rules.synthetic_stimuli.output[0],
            manifest=MANIFEST,
        output:
            nwb=f"{RAW}/{{eid}}.nwb",
            cells=f"{RESULTS}/synthetic/planted/{{eid}}_cells.tsv",
        log:
            f"{LOGS}/synthetic_session/{{eid}}.log",
        priority: CRITICAL_PATH
        conda:
            MAIN_ENV
        resources:
            mem_mb=2000,
            runtime=10,
        params:
            # ZOO: the model table read by extract.smk
            cfg=lambda wc: job_params(
                "synthetic_session", config, drive_model=layer_drive_model(config, ZOO)
            ),
        script:
            "../scripts/synthetic_session.py"

elif SOURCE == "dandi":

    localrules:
        dandi_manifest,
        dandi_download,

    checkpoint dandi_manifest:
        output:
            manifest=MANIFEST,
        log:
            f"{LOGS}/dandi_manifest.log",
        conda:
            MAIN_ENV
        resources:
            mem_mb=1000,
            runtime=60,
        params:
            cfg=dandi_discovery_params(config),
        script:
            "../scripts/dandi_manifest.py"

    rule dandi_download:
        input:
            manifest=MANIFEST,
        output:
            nwb=f"{RAW}/{{eid}}.nwb",
        log:
            f"{LOGS}/dandi_download/{{eid}}.log",
        retries: 2
        conda:
            MAIN_ENV
        resources:
            mem_mb=500,
            runtime=240,
        script:
            "../scripts/dandi_download.py"

else:

    localrules:
        allen_manifest,
        allen_download,

    checkpoint allen_manifest:
        output:
            manifest=MANIFEST,
        log:
            f"{LOGS}/allen_manifest.log",
        conda:
            ALLENSDK_ENV
        resources:
            mem_mb=2000,
            runtime=30,
        params:
            python=workflow_path(config["allen"]["python"]),
            src=SRC,
            manifest_file=f"{config['allen']['cache_dir']}/manifest.json",
            areas=config["allen"]["areas"],
            # optional flags as argument lists, so the shell command quotes every word
            cre=(
                ["--cre-lines", *config["allen"]["cre_lines"]]
                if config["allen"]["cre_lines"]
                else []
            ),
            depths=(
                ["--imaging-depths", *map(str, config["allen"]["imaging_depths"])]
                if config["allen"]["imaging_depths"]
                else []
            ),
            limit=(
                ["--max-experiments", str(config["allen"]["max_experiments"])]
                if config["allen"]["max_experiments"]
                else []
            ),
        shell:
            "PYTHONPATH={params.src:q} {params.python:q} -m mice2machines.neural.allen discover"
            " --manifest-file {params.manifest_file:q} --out {output.manifest:q}"
            " --areas {params.areas:q} {params.cre:q} {params.depths:q} {params.limit:q}"
            " > {log:q} 2>&1"

    rule allen_download:
        output:
            nwb=f"{RAW}/{{eid}}.nwb",
        log:
            f"{LOGS}/allen_download/{{eid}}.log",
        retries: 2
        conda:
            MAIN_ENV
        resources:
            mem_mb=500,
            runtime=120,
        params:
            url=lambda wildcards: config["allen"]["url_template"].format(
                experiment_id=int(wildcards.eid)
            ),
        script:
            "../scripts/allen_download.py"


rule nwb_to_zarr:
    input:
        unpack(lambda wc: session_input(wc.eid)),
    output:
        store=directory(f"{RESULTS}/neural/experiments/{{eid}}.zarr"),
    log:
        f"{LOGS}/nwb_to_zarr/{{eid}}.log",
    priority: CRITICAL_PATH
    conda:
        MAIN_ENV
    resources:
        mem_mb=mem_mb_of("nwb_to_zarr"),
        runtime=runtime_of("nwb_to_zarr", 30),
    params:
        cfg=job_params("nwb_to_zarr", config, **dandi_job(config)),
    script:
        "../scripts/nwb_to_zarr.py"


rule stimuli:
    input:
        unpack(first_experiment_input),
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
    script:
        "../scripts/stimuli.py"


rule population:
    input:
        stores=experiment_stores,
    output:
        store=directory(f"{RESULTS}/neural/population.zarr"),
    log:
        f"{LOGS}/population.log",
    priority: CRITICAL_PATH
    conda:
        MAIN_ENV
    resources:
        mem_mb=mem_mb_of("population"),
        runtime=runtime_of("population", 60),
    params:
        cfg=job_params("population", config),
    script:
        "../scripts/population.py"
