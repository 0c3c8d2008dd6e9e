"""DANDI NWB 2 sessions (pynwb-written, in the converter's layout) give the NWB 1 stores;
discovery and download through the dandi client against a loopback DANDI API; streaming."""

from __future__ import annotations

import hashlib
import re

import numpy as np
import pytest
import xarray as xr
from dandi_server import Server, asset_record

from mice2machines.io import open_zarr
from mice2machines.neural import convert, dandi, nwb, nwb2
from mice2machines.neural.labels import AREAS
from mice2machines.neural.nwb import NWBError
from mice2machines.synthetic.nwb2 import write_dandi_session


@pytest.fixture(scope="module")
def dandi_set(nwb_paths, tmp_path_factory):
    """The synthetic NWB 1 sessions rewritten as DANDI NWB 2 files: [(nwb1, nwb2, depth)]."""
    d = tmp_path_factory.mktemp("dandi")
    out = []
    for p in nwb_paths:
        s = nwb.read_session(p)
        v2 = d / f"sub-{s.experiment_id}_ses-{s.experiment_id}-StimB_behavior+ophys.nwb"
        write_dandi_session(p, v2)
        out.append((p, v2, s.imaging_depth))
    return out


def _store(session, path, cfg=None):
    convert.convert_session(session, path, {"cell_block": 4, **(cfg or {})})
    ds = open_zarr(path).load()
    for key in ("provenance", "source_file"):
        ds.attrs.pop(key)
    return ds


def test_stores_equal_nwb1(dandi_set, tmp_path):
    """Every variable, coord and label attr of the experiment store, from either layout."""
    for i, (v1, v2, depth) in enumerate(dandi_set):
        a = _store(nwb.read_session(v1), tmp_path / f"a{i}.zarr")
        s2 = nwb2.read_session(v2, imaging_depth=depth)
        b = _store(s2, tmp_path / f"b{i}.zarr")
        xr.testing.assert_identical(a, b)
        assert int((a.presentation_image < 0).sum()) > 0  # blanks made it through
        assert a.sizes["cell"] == s2.n_cells > 0
        assert s2.mouse == nwb.read_session(v1).mouse != ""  # notes' donor = specimen tail


def test_layout_quirks(dandi_set):
    import h5py

    v1, v2, depth = dandi_set[0]
    with h5py.File(v2, "r") as f:
        data = f["stimulus/presentation/natural_scenes_stimulus/data"]
        assert data.dtype == np.uint32 and (data[:] == 4294967295).sum() > 0
        assert "{depth}" in f["general/optophysiology/ImagingPlane/description"][()].decode()
        assert f["processing/ophys/DfOverF/DfOverF/data"].shape[0] > 1000  # (time, roi)
    s = nwb2.read_session(v2, imaging_depth=depth)
    assert (
        s.session_type == "three_session_B" and s.container_id == nwb.read_session(v1).container_id
    )
    with pytest.raises(NWBError, match=r"no imaging depth.*\{depth\}.*experiments_table"):
        nwb2.read_session(v2)
    assert nwb2.read_session(v2, default_depth=-1).imaging_depth == -1
    np.testing.assert_array_equal(
        nwb2.read_session(v2, imaging_depth=1).template(),
        np.floor(nwb.read_session(v1).template()),
    )


def test_depth_in_description_and_saturated_blanks(dandi_set, tmp_path):
    v1 = dandi_set[0][0]
    write_dandi_session(v1, tmp_path / "d.nwb", depth_in_description=True)
    assert nwb2.read_session(tmp_path / "d.nwb").imaging_depth == dandi_set[0][2]
    write_dandi_session(v1, tmp_path / "s.nwb", saturate=True)
    with pytest.raises(NWBError, match=r"s\.nwb: image 0 is shown 24 times.*clipped to 0"):
        nwb2.read_session(tmp_path / "s.nwb", imaging_depth=1)


def test_onsets_inside_a_frame_map_to_it():
    t = np.arange(10) / 30.0
    onsets = t[[2, 5, 7]] + 0.3 / 30  # a third of a frame after the frame started
    np.testing.assert_array_equal(nwb2.frame_indices(t, onsets, "x"), [2, 5, 7])
    with pytest.raises(NWBError, match="outside"):
        nwb2.frame_indices(t, np.array([-1.0]), "x")


def test_summarize_and_read_any(dandi_set):
    v1, v2, _ = dandi_set[1]
    info = nwb2.summarize(v2)
    s1 = nwb.read_session(v1)
    assert info["n_cells"] == s1.n_cells and info["n_images"] == 118
    assert info["n_repeats"] == 12 and info["n_blanks"] == 12
    assert info["areas"] == [s1.area] and info["cre_lines"] == [s1.cre_line]
    assert info["experiment_ids"] == [s1.experiment_id] and info["imaging_depth"] is None
    assert isinstance(nwb2.read_any(v2, default_depth=0), nwb2.DandiSession)
    assert type(nwb2.read_any(v1)) is nwb.Session


def _assets(dandi_set, tmp_path):
    """The set as a dandiset: one processed asset per session plus one raw (left out)."""
    files, assets = {}, []
    for i, (v1, v2, _) in enumerate(dandi_set):
        s = nwb.read_session(v1)
        sub = f"sub-{s.experiment_id % 1000}"
        files[v2.name] = v2
        path = f"{sub}/{sub}_ses-{s.experiment_id}-StimB_behavior+ophys.nwb"
        assets.append(asset_record(f"a{i}", path, v2, s.genotype))
        raw = tmp_path / f"raw{i}.nwb"
        raw.write_bytes(b"raw movie")
        files[raw.name] = raw
        assets.append(
            asset_record(
                f"r{i}",
                f"{sub}/{sub}_ses-{s.experiment_id}-StimB_ophys.nwb",
                raw,
                s.genotype,
                raw=True,
            )
        )
    return files, assets


def test_discover_and_download(dandi_set, tmp_path, monkeypatch):
    monkeypatch.setenv("DANDI_NO_ET", "1")
    files, assets = _assets(dandi_set, tmp_path)
    ids = [nwb.read_session(v1).experiment_id for v1, _, _ in dandi_set]
    table = tmp_path / "experiments.tsv"
    lines = [f"{e}\t{d}\tVISp\n" for e, (_, _, d) in zip(ids, dandi_set, strict=True)]
    table.write_text("experiment_id\timaging_depth\tarea\n" + "".join(lines))
    with Server(files, assets) as srv:
        cfg = {"api_url": f"{srv.url}/api", "experiments_table": str(table)}
        rows = dandi.discover(cfg)
        assert [r["experiment_id"] for r in rows] == sorted(ids)
        assert all(r["asset_id"].startswith("a") and r["version"] for r in rows)
        cre = nwb.read_session(dandi_set[1][0]).cre_line
        only = dandi.discover({**cfg, "cre_lines": [cre]})
        assert [r["cre_line"] for r in only] == [cre]
        with pytest.raises(dandi.DandiError, match="no processed StimB asset for \\[1\\]"):
            dandi.discover({**cfg, "sessions": [1]})
        manifest = tmp_path / "manifest.tsv"
        dandi.write_manifest(rows, manifest)
        row = dandi.manifest_row(manifest, rows[0]["experiment_id"])
        dest = tmp_path / "cache" / "s.nwb"
        dandi.download_asset(row, dest, log=None)
        n = len(srv.served.requests)
        dandi.download_asset(row, dest, log=None)  # complete: kept, nothing fetched
        assert len(srv.served.requests) == n
        bad = {**row, "sha256": "0" * 64}
        dest.unlink()
        with pytest.raises(dandi.DownloadError, match="sha256 checksum mismatch"):
            dandi.download_asset(bad, dest, retries=1, log=None)
        assert not dest.exists() and not list(dest.parent.glob("*.part"))
    src = next(v2 for v1, v2, _ in dandi_set if v2.name.startswith(f"sub-{row['experiment_id']}"))
    assert int(row["imaging_depth"]) == dandi.session_depth(row)
    assert hashlib.sha256(src.read_bytes()).hexdigest() == row["sha256"]


def test_streaming_reads_only_what_it_needs(dandi_set, tmp_path):
    """A heavy session (a 32 MB acquisition beside the traces) streamed over loopback: the
    store equals the local one, and a small part of the file travels."""
    from pynwb import NWBHDF5IO, TimeSeries

    v1, v2, depth = dandi_set[0]
    heavy = tmp_path / "heavy.nwb"
    write_dandi_session(v1, heavy)
    with NWBHDF5IO(str(heavy), "a") as io:
        f = io.read()
        f.add_acquisition(
            TimeSeries(
                name="EyeTracking",
                data=np.random.default_rng(0).random((1_000_000, 4)),
                rate=30.0,
                unit="m",
            )
        )
        io.write(f)
    size = heavy.stat().st_size
    local = _store(nwb2.read_session(heavy, imaging_depth=depth), tmp_path / "local.zarr")
    with Server({"heavy.nwb": heavy}) as srv:
        url = f"{srv.url}/files/heavy.nwb"
        s = nwb2.read_session(url, imaging_depth=depth, sha256="abc")
        streamed = _store(s, tmp_path / "streamed.zarr")
        s.close()
        served, requests = srv.served.bytes, list(srv.served.requests)
    xr.testing.assert_identical(local, streamed)
    ranged = [r for r in requests if r[1]]
    assert ranged and served < 0.1 * size, (served, size, len(requests))
    assert open_zarr(tmp_path / "streamed.zarr").attrs["source_file"] == url
    print(f"streamed {served} of {size} bytes in {len(requests)} requests ({len(ranged)} ranged)")


def test_dandi_etag_matches_dandischema(tmp_path):
    """Our etag against dandischema's own code (its module loaded by path: the package
    itself cannot import under pydantic 2)."""
    import importlib.util
    from pathlib import Path

    found = importlib.util.find_spec("dandischema")
    if found is None:
        pytest.skip("dandischema is not installed")
    ref = Path(found.submodule_search_locations[0]) / "digests" / "dandietag.py"
    spec = importlib.util.spec_from_file_location("dandietag_ref", ref)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    for n in (1, 5_000_001):
        f = tmp_path / f"{n}.bin"
        f.write_bytes(np.random.default_rng(n).bytes(n))
        assert dandi.dandi_etag(f) == mod.DandiETag.from_file(f).as_str()
    f.write_bytes(b"x" * (3 * (5 << 20) + 7))
    gen = mod.PartGenerator
    try:
        gen.DEFAULT_PART_SIZE = 5 << 20
        want = mod.DandiETag.from_file(f).as_str()
    finally:
        gen.DEFAULT_PART_SIZE = 64 << 20
    assert want.endswith("-4") and dandi.dandi_etag(f, part_size=5 << 20) == want


def test_workflow_dandi_source(dandi_set, tmp_path):
    """`source: dandi` through the workflow: discovery against the loopback archive, streamed
    sessions to the experiment stores (equal to the NWB 1 ones) and the population; the same
    manifest without streaming plans one download per session; the run goes on to the scores
    and the figures (one small model and metric)."""
    import subprocess

    import yaml
    from conftest import copy_config, snakemake_cmd

    files, assets = _assets(dandi_set, tmp_path)
    ids = sorted(nwb.read_session(v1).experiment_id for v1, _, _ in dandi_set)
    table = tmp_path / "experiments.tsv"
    depths = {nwb.read_session(v1).experiment_id: d for v1, _, d in dandi_set}
    table.write_text("experiment_id\timaging_depth\n" + "".join(f"{e}\t{depths[e]}\n" for e in ids))
    work = tmp_path / "wf"
    work.mkdir()
    copy_config(work)
    with Server(files, assets) as srv:
        cfg = yaml.safe_load((work / "config" / "config.yaml").read_text())
        cfg["source"] = "dandi"
        cfg["dandi"] = {
            "api_url": f"{srv.url}/api",
            "experiments_table": str(table),
            "stream": True,
        }
        (work / "config" / "config.yaml").write_text(yaml.safe_dump(cfg))
        targets = ["results/neural/population.zarr", "results/stimuli.zarr"]
        env = {**__import__("os").environ, "DANDI_NO_ET": "1"}
        proc = subprocess.run(
            snakemake_cmd(work, "--cores", "2", *targets, timeout_s=300),
            capture_output=True,
            text=True,
            env=env,
        )
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        assert all(r[0].startswith("/files/") or "/api/" in r[0] for r in srv.served.requests)
        cfg["models"] = {**cfg.get("models", {}), "only": ["mobilenet_v3_small_random"]}
        cfg["compare"] = {
            **cfg.get("compare", {}),
            "metrics": ["rsa_spearman"],
            "n_boot": 10,
            "n_perm": 10,
            "n_perm_max": 10,
        }
        (work / "config" / "config.yaml").write_text(yaml.safe_dump(cfg))
        proc = subprocess.run(
            snakemake_cmd(
                work, "--cores", "2", "results/compare/scores.csv", "compare_figures", timeout_s=900
            ),
            capture_output=True,
            text=True,
            env=env,
        )
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        import pandas as pd

        scores = pd.read_csv(work / "results/compare/scores.csv")
        assert set(scores.model) == {"mobilenet_v3_small_random"}
        assert scores.n_cells.max() == sum(nwb.read_session(p).n_cells for p, _, _ in dandi_set)
        assert (work / "results/compare/figures/heatmap_rsa_spearman.png").stat().st_size > 1000
    pop = open_zarr(work / "results/neural/population.zarr")
    assert sorted(set(pop.experiment_id.values.tolist())) == ids
    for v1, _, _ in dandi_set:
        s1 = nwb.read_session(v1)
        got = open_zarr(work / f"results/neural/experiments/{s1.experiment_id}.zarr").load()
        want = _store(s1, tmp_path / f"want{s1.experiment_id}.zarr")
        assert got.attrs.pop("source_file").endswith("/download/")
        got.attrs.pop("provenance")
        got = got.chunk({"cell": 4}).load()
        xr.testing.assert_identical(want, got)
    cfg["dandi"]["stream"] = False
    (work / "config" / "config.yaml").write_text(yaml.safe_dump(cfg))
    dry = subprocess.run(
        snakemake_cmd(work, "-n", *targets, timeout_s=120),
        capture_output=True,
        text=True,
    )
    assert dry.returncode == 0, dry.stdout[-3000:] + dry.stderr[-3000:]
    stats = dict(re.findall(r"^(\w+)\s+(\d+)$", dry.stdout + dry.stderr, flags=re.M))
    n = str(len(ids))
    assert stats.get("dandi_download") == n and stats.get("nwb_to_zarr") == n, stats
    assert "dandi_manifest" not in stats  # the manifest stands: discovery is not planned again


def test_download_resumes_a_broken_transfer(dandi_set, tmp_path, monkeypatch):
    """The first transfer breaks off halfway; the retry asks for the rest (HTTP range), and
    the file, checked against the archive's sha256, travels about once."""
    monkeypatch.setenv("DANDI_NO_ET", "1")
    files, assets = _assets(dandi_set, tmp_path)
    size = assets[0]["size"]
    with Server(files, assets, cut_first=size // 2) as srv:
        cfg = {"api_url": f"{srv.url}/api", "unknown_depth": -1, "max_sessions": 1}
        row = dandi.discover(cfg)[0]
        dest = tmp_path / "s.nwb"
        dandi.download_asset(row, dest, retries=2, backoff_s=0, log=None)
        got = [r for r in srv.served.requests if r[0].startswith("/files/")]
    assert got[0][1] == "" and got[1][1] == f"bytes={size // 2}-"
    assert srv.served.bytes < 1.1 * size
    assert hashlib.sha256(dest.read_bytes()).hexdigest() == row["sha256"]
    assert not list(tmp_path.glob(".s.nwb*.part"))


def test_experiments_table_from_the_real_allen_cache():
    from conftest import real_fixtures

    real = real_fixtures()
    if real is None:
        pytest.skip("no shared/data/allen")
    table = dandi.read_experiments_table(
        real / "brain_observatory_cache/experiment_containers.json"
    )
    assert len(table) >= 3 * 200
    assert table[569407590] == {"imaging_depth": 275, "area": "VISam", "container_id": 566759225}
    assert {r["area"] for r in table.values()} <= set(AREAS)
    assert all(175 <= r["imaging_depth"] <= 625 for r in table.values())


def test_bad_inputs_named(dandi_set, tmp_path):
    v1, v2, _ = dandi_set[0]
    with pytest.raises(NWBError, match=rf"{v1.name}: not a readable NWB 2 file"):
        nwb2.read_session(v1)
    with pytest.raises(FileNotFoundError, match="nope.nwb"):
        nwb2.read_session(tmp_path / "nope.nwb")
    bad = tmp_path / "t.csv"
    bad.write_text("experiment_id,depth\n1,175\n")
    with pytest.raises(
        dandi.DandiError, match=r"t\.csv: needs columns experiment_id and imaging_depth"
    ):
        dandi.read_experiments_table(bad)
    with pytest.raises(dandi.DandiError, match="dandi.areas needs dandi.experiments_table"):
        dandi.discover({"areas": ["VISp"], "api_url": "http://127.0.0.1:9/api"})
    with pytest.raises(dandi.DandiError, match=r"127\.0\.0\.1:9/api/dandisets/000728/: DANDI API"):
        dandi.discover({"api_url": "http://127.0.0.1:9/api"})


def test_converter_era_unit_reads(dandi_set, tmp_path):
    """The converter wrote the IndexSeries unit 'n.a.' (pynwb 4 writes only 'N/A'): it reads."""
    import shutil

    import h5py

    v2 = shutil.copy(dandi_set[0][1], tmp_path / "old.nwb")
    with h5py.File(v2, "r+") as f:
        f["stimulus/presentation/natural_scenes_stimulus/data"].attrs["unit"] = "n.a."
    s = nwb2.read_session(v2, imaging_depth=1)
    assert (s.stimulus.frame == -1).sum() == 12


@pytest.mark.parametrize(
    "drop, message",
    [
        (
            "stimulus/presentation/natural_scenes_stimulus",
            "no 'natural_scenes_stimulus' IndexSeries",
        ),
        ("processing/ophys/DfOverF", "no 'DfOverF' in processing/ophys \\(found"),
    ],
)
def test_missing_parts_named(dandi_set, tmp_path, drop, message):
    import shutil

    import h5py

    v2 = shutil.copy(dandi_set[0][1], tmp_path / "part.nwb")
    with h5py.File(v2, "r+") as f:
        del f[drop]
    with pytest.raises(NWBError, match=rf"part\.nwb: {message}"):
        nwb2.read_session(v2, imaging_depth=1)
