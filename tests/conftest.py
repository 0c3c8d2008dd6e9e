"""Shared fixtures: small synthetic sessions in the real Allen NWB layout, tool paths."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
if str(SRC) not in sys.path:
    sys.path.insert(0, str(SRC))

from mice2machines import synthetic  # noqa: E402

SMALL = {
    "seed": 3,
    "image_height": 24,
    "image_width": 30,
    "n_repeats": 12,
    "areas": ["VISp", "VISal"],
    "cre_lines": ["Cux2-CreERT2", "Sst-IRES-Cre"],
    "experiments_per_combination": 1,
    "cells_per_experiment": 10,
}


def real_fixtures() -> Path | None:
    """The real Allen metadata folder (shared/data/allen) or None."""
    env = os.environ.get("M2M_REAL_FIXTURES")
    candidates = [Path(env)] if env else []
    candidates.append(ROOT.parent / "shared" / "data" / "allen")
    for c in candidates:
        if (c / "brain_observatory_cache" / "experiment_containers.json").exists():
            return c
    return None


def allensdk_python() -> Path | None:
    p = Path(os.environ.get("M2M_ALLENSDK_PYTHON", ROOT / ".venv-allensdk" / "bin" / "python"))
    return p if p.exists() else None


@pytest.fixture(scope="session")
def small_cfg() -> dict:
    return dict(SMALL)


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory, small_cfg) -> Path:
    """Template, manifest and two NWB sessions (one excitatory, one inhibitory)."""
    d = tmp_path_factory.mktemp("synthetic")
    synthetic.write_template(d / "template.npy", small_cfg)
    table = synthetic.write_manifest(d / "manifest.tsv", small_cfg)
    for eid in table.experiment_id[[0, 1]]:
        synthetic.write_session(
            d / "template.npy",
            d / "manifest.tsv",
            int(eid),
            d / f"{eid}.nwb",
            d / f"{eid}_cells.tsv",
            small_cfg,
        )
    return d


@pytest.fixture(scope="session")
def nwb_paths(synthetic_dir) -> list[Path]:
    return sorted(synthetic_dir.glob("*.nwb"))


@pytest.fixture
def nwb_copy(nwb_paths, tmp_path) -> Path:
    """A private copy of one synthetic NWB file, free to corrupt."""
    dst = tmp_path / nwb_paths[0].name
    shutil.copy(nwb_paths[0], dst)
    return dst


def require_or_skip(condition: bool, env: str, reason: str) -> None:
    """Skip when `condition` fails, unless env var `env`=1 demands it (then fail)."""
    if condition:
        return
    if os.environ.get(env) == "1":
        pytest.fail(f"{reason} (required by {env}=1)")
    pytest.skip(reason)


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


# workflow runs in tests import this checkout's package, whatever is installed
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (str(ROOT / "src"), os.environ.get("PYTHONPATH")) if p
)


#: a dry run through Snakemake's API in a fresh interpreter (argv: Snakefile, workdir, out);
#: ``w`` is the planned workflow when the probe's body runs, ``result`` what it returns
_DRY_RUN = """
import json, sys
from pathlib import Path
from snakemake.api import SnakemakeApi
from snakemake.settings.types import (
    ConfigSettings, DAGSettings, OutputSettings, Quietness, ResourceSettings, StorageSettings
)
snakefile, workdir, out = sys.argv[1:4]
with SnakemakeApi(OutputSettings(quiet={{Quietness.ALL}})) as api:
    wf = api.workflow(
        resource_settings=ResourceSettings(cores=1),
        config_settings=ConfigSettings(),
        storage_settings=StorageSettings(),
        snakefile=Path(snakefile),
        workdir=Path(workdir),
    )
    wf.dag(DAGSettings({dag})).execute_workflow(executor="dryrun")
    w = wf._workflow
{body}
Path(out).write_text(json.dumps(result))
"""


def dry_run_probe(workdir: Path, body: str, targets=None) -> object:
    """Plan the workflow in ``workdir`` (Snakemake's API, a dry run, under a hard timeout)
    and return, from JSON, the ``result`` that ``body`` (Python with the planned workflow
    ``w`` in scope) computes."""
    import json
    import subprocess
    import textwrap

    dag = "" if targets is None else f"targets={set(targets)!r}"
    code = _DRY_RUN.format(dag=dag, body=textwrap.indent(textwrap.dedent(body), "    "))
    out = Path(workdir) / "dry_run_probe.json"
    proc = subprocess.run(
        ["timeout", "300", sys.executable, "-c", code, str(ROOT / "Snakefile"), str(workdir),
         str(out)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(out.read_text())


def snakemake_cmd(workdir: Path, *args: str, timeout_s: int = 1200) -> list[str]:
    """A snakemake call on the project's Snakefile in `workdir`, under a hard timeout."""
    exe = Path(sys.executable).with_name("snakemake")
    return [
        "timeout",
        "-k",
        "30",
        str(timeout_s),
        str(exe),
        "-s",
        str(ROOT / "Snakefile"),
        "--directory",
        str(workdir),
        *args,
    ]


def copy_config(workdir: Path) -> Path:
    """The repository's config/ files copied into ``workdir/config`` (returned), to run or edit."""
    dest = workdir / "config"
    dest.mkdir()
    for f in (ROOT / "config").iterdir():
        if f.is_file():
            shutil.copy(f, dest / f.name)
    return dest


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory) -> Path:
    """The embedded default (config/config.yaml) run end to end once; returns the workdir.

    Stage tests read its results instead of running the workflow again.
    """
    import subprocess

    work = tmp_path_factory.mktemp("demo")
    copy_config(work)
    cmd = snakemake_cmd(work, "--cores", "2", timeout_s=3000)  # ~10-20 min on 2 busy cores
    proc = subprocess.run(cmd, capture_output=True, text=True)
    (work / "snakemake.stderr").write_text(proc.stderr)
    assert proc.returncode == 0, proc.stderr[-5000:]
    return work
