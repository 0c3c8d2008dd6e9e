"""A quiet console: warnings and tracebacks in the rule logs, one line per failure; stores that
zarr-python and tensorstore read (labels as CF flag variables, CF attributes)."""

import json
import re
import subprocess
import sys
import warnings

import numpy as np
import pytest
import xarray as xr
import yaml
import zarr
from conftest import ROOT, SRC, copy_config, snakemake_cmd

from mice2machines import io
from mice2machines.io import open_zarr, write_zarr_atomic

#: what a Python warning looks like on a console (``UserWarning: ...``, ``FutureWarning: ...``)
PY_WARNING = re.compile(r"\b\w*Warning: ")


def python_warnings(text: str) -> list[str]:
    return [line for line in text.splitlines() if PY_WARNING.search(line)]


@pytest.mark.workflow
def test_small_workflow_console_has_no_python_warning(tmp_path):
    """Sessions, experiment stores, the population, stimuli and the comparison's neural store:
    no Python warning on the console, every store consolidated with its labels coded."""
    copy_config(tmp_path)
    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    cfg.setdefault("synthetic", {}).update(
        areas=["VISp", "VISl"], cre_lines=["Cux2-CreERT2"], cells_per_experiment=30
    )
    (tmp_path / "config" / "config.yaml").write_text(yaml.safe_dump(cfg))
    target = "results/compare/neural.zarr"
    proc = subprocess.run(
        snakemake_cmd(tmp_path, "--cores", "2", target, timeout_s=600),
        capture_output=True,
        text=True,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert python_warnings(out) == [], python_warnings(out)
    stores = [tmp_path / target, *(tmp_path / "results").rglob("*.zarr")]
    for store in stores:
        assert (store / ".snakemake_timestamp").exists() or store.parent.name == "experiments"
        assert io.is_consolidated(store), store
        assert json.loads((store / "zarr.json").read_text())["attributes"]["title"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pop = xr.open_zarr(tmp_path / "results" / "neural" / "population.zarr")
    assert pop.area.dtype.kind == "i" and pop.area.attrs["flag_meanings"] == "VISl VISp"
    assert set(open_zarr(tmp_path / "results" / "neural" / "population.zarr").area.values) == {
        "VISp",
        "VISl",
    }


@pytest.mark.workflow
def test_demo_console_has_no_python_warning(demo_run):
    """The whole demo's console (the session's one run): no Python warning, no traceback."""
    console = (demo_run / "snakemake.stderr").read_text()
    assert python_warnings(console) == [], python_warnings(console)[:20]
    assert "Traceback" not in console


def _script(tmp_path, body: str) -> subprocess.CompletedProcess:
    code = f"import sys; sys.path.insert(0, {str(SRC)!r})\n" + body
    return subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "rule.log")], capture_output=True, text=True
    )


def test_script_stderr_warnings_and_traceback_go_to_the_rule_log(tmp_path):
    proc = _script(
        tmp_path,
        "import os, warnings\n"
        "from mice2machines.io import script_logger\n"
        "log = script_logger(sys.argv[1])\n"
        "log.info('started')\n"
        "warnings.warn('a library warning', FutureWarning)\n"
        "print('printed to stderr', file=sys.stderr)\n"
        "os.write(2, b'native stderr\\n')\n"
        "log.warning('dropped 3 of 10 cells')\n"
        "raise ValueError('bad value\\nsecond line')\n",
    )
    assert proc.returncode == 1
    log = (tmp_path / "rule.log").read_text()
    for text in ("started", "FutureWarning: a library warning", "printed to stderr"):
        assert text in log
    assert "native stderr" in log and "Traceback (most recent call last)" in log
    assert "ValueError: bad value" in log
    console = proc.stderr.strip().splitlines()
    assert len(console) == 2, proc.stderr
    assert console[0].endswith("WARNING dropped 3 of 10 cells")
    assert console[1] == f"ValueError: bad value second line (traceback: {tmp_path / 'rule.log'})"
    assert python_warnings(proc.stderr) == []


def test_script_log_ends_with_the_peak_memory_of_the_process_and_its_children(tmp_path):
    """A script holding a 200 MB array, after a child that held 100 MB: the log's last line
    is the peak, at least what each allocated."""
    proc = _script(
        tmp_path,
        "import subprocess\n"
        "import numpy as np\n"
        "from mice2machines.io import script_logger\n"
        "log = script_logger(sys.argv[1])\n"
        "child = 'import numpy as np; np.ones(100 * 10**6 // 8)'\n"
        "subprocess.run([sys.executable, '-c', child], check=True)\n"
        "x = np.ones(200 * 10**6 // 8)\n"
        "log.info('holding %d MB', x.nbytes // 10**6)\n",
    )
    assert proc.returncode == 0, proc.stderr
    last = (tmp_path / "rule.log").read_text().splitlines()[-1]
    m = re.search(r"INFO peak memory (\d+) MB \(VmHWM; largest child process (\d+) MB\)$", last)
    assert m, last
    assert int(m[1]) >= 200 and int(m[2]) >= 100, last
    assert "peak memory" not in proc.stderr


def test_peak_rss_is_at_least_what_the_process_holds():
    x = np.ones(50 * 10**6 // 8)
    peak, child, source = io.peak_rss_mb()
    assert source == "VmHWM" and peak >= x.nbytes / 1e6 and child >= 0


def test_network_failure_is_one_line_with_the_url_and_what_to_do_offline(tmp_path):
    """A refused connection (a loopback port nobody listens on) through the package's fetcher."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/weights.pth"
    proc = _script(
        tmp_path,
        "from mice2machines.io import script_logger\n"
        "from mice2machines.download import download\n"
        "log = script_logger(sys.argv[1])\n"
        f"download({url!r}, {str(tmp_path / 'w.pth')!r}, retries=1, log=log.info)\n",
    )
    assert proc.returncode == 1
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("DownloadError: ") or line.startswith("network failure: ")
    assert url in line and "ffline" in line and str(tmp_path / "rule.log") in line
    assert "Connection refused" in (tmp_path / "rule.log").read_text()


def _population_like(tmp_path):
    rng = np.random.default_rng(0)
    ds = xr.Dataset(
        {"responses": (("cell", "image"), rng.random((5, 3), dtype=np.float32))},
        coords={
            "cell": np.arange(100, 105),
            "area": ("cell", np.array(["VISp", "VISl", "VISp", "VISam", "VISl"])),
            "cre_line": ("cell", np.array(["Cux2-CreERT2"] * 3 + ["Vip-IRES-Cre"] * 2)),
            "ei_class": ("cell", np.array(["excitatory"] * 3 + ["inhibitory"] * 2, dtype=object)),
        },
    )
    path = write_zarr_atomic(ds, tmp_path / "population.zarr")
    return ds, path


def test_store_labels_read_back_by_zarr_python_and_the_package(tmp_path):
    ds, path = _population_like(tmp_path)
    root = zarr.open_group(str(path), mode="r")
    assert root.attrs["Conventions"].startswith("CF-") and root.attrs["title"]
    area = root["area"]
    assert area.dtype.kind == "i"
    meanings = area.attrs["flag_meanings"].split()
    assert [meanings[c] for c in area[:]] == ["VISp", "VISl", "VISp", "VISam", "VISl"]
    assert list(area.attrs["flag_values"]) == list(range(len(meanings)))
    assert root["responses"].attrs["units"] == "1" and root["responses"].attrs["long_name"]
    back = open_zarr(path).load()
    for name in ("area", "cre_line", "ei_class"):
        assert back[name].values.tolist() == io.as_str(ds[name].values).tolist()
        assert "flag_values" not in back[name].attrs
    np.testing.assert_array_equal(back.responses.values, ds.responses.values)


#: reads every array named on the command line from a store with tensorstore; prints JSON
TS_READER = """
import json, sys
import tensorstore as ts
store, names = sys.argv[1], sys.argv[2:]
out = {}
for name in names:
    spec = {"driver": "zarr3", "kvstore": {"driver": "file", "path": f"{store}/{name}"}}
    out[name] = ts.open(spec, read=True).result().read().result().tolist()
print(json.dumps(out))
"""


def _tensorstore_python() -> str | None:
    """This interpreter when it has tensorstore, else $M2M_TENSORSTORE_PYTHON."""
    import importlib.util
    import os

    if importlib.util.find_spec("tensorstore"):
        return sys.executable
    return os.environ.get("M2M_TENSORSTORE_PYTHON")


def test_store_labels_and_values_read_by_tensorstore(tmp_path):
    python = _tensorstore_python()
    if not python:
        pytest.skip("tensorstore is not installed (or set M2M_TENSORSTORE_PYTHON)")
    ds, path = _population_like(tmp_path)
    names = ["responses", "area", "cre_line", "ei_class"]
    proc = subprocess.run(
        [python, "-c", TS_READER, str(path), *names], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout)
    np.testing.assert_allclose(got["responses"], ds.responses.values, rtol=0, atol=0)
    for name in names[1:]:
        meta = json.loads((path / name / "zarr.json").read_text())["attributes"]
        labels = [meta["flag_meanings"].split()[c] for c in got[name]]
        assert labels == io.as_str(ds[name].values).tolist()
