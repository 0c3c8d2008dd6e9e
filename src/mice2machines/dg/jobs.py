"""What defines a DG training job, without torch: read by the config schema (the architecture
names), the workflow (each job's settings, at planning time) and `training.TrainConfig`."""

from __future__ import annotations

import json
from collections.abc import Mapping

#: the digit architectures; `networks` has one builder per name (NAS-derived: mnasnet,
#: mobilenet_v3, efficientnet_b0)
ARCHS = ("small_cnn", "resnet18", "mnasnet", "mobilenet_v3", "efficientnet_b0", "vit")

#: train settings that never change a job's result (kept out of its resume key and params)
RUN_KEYS = ("device", "threads", "eval_batch_size")


def job_settings(dg: Mapping, arch: str, variant: str, source: str, seed: int) -> dict:
    """The settings of one job from a filled ``dg`` section: dg.train, then
    dg.arch_train[arch], then the job's own keys and dg.neurn."""
    return {
        **dg["train"],
        **dg["arch_train"].get(arch, {}),
        "arch": arch,
        "variant": variant,
        "source": source,
        "seed": int(seed),
        "neurn": dict(dg["neurn"]),
    }


def result_settings(settings: Mapping) -> dict:
    """The settings that determine the result (``RUN_KEYS`` dropped)."""
    return {k: v for k, v in settings.items() if k not in RUN_KEYS}


def run_settings(settings: Mapping) -> dict:
    """The settings of ``RUN_KEYS`` only (where and how fast a job runs)."""
    return {k: v for k, v in settings.items() if k in RUN_KEYS}


def result_params(dg: Mapping, arch: str, variant: str, source: str, seed: int | str) -> str:
    """A job's result settings as one canonical string (a rule's params: a change in a run
    setting reruns nothing; the job reads those from the config)."""
    return canonical(result_settings(job_settings(dg, arch, variant, source, int(seed))))


def canonical(settings: Mapping) -> str:
    """One string per set of settings (sorted keys): equal settings, equal string."""
    return json.dumps(settings, sort_keys=True)
