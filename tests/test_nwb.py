"""The independent h5py reader, and clear errors for every kind of bad input."""

import h5py
import numpy as np
import pytest

from mice2machines.io import open_zarr
from mice2machines.neural import convert as neural
from mice2machines.neural.nwb import NWBError, read_session

P = "processing/brain_observatory_pipeline"


def test_reader_reads_metadata_and_table(nwb_paths, small_cfg):
    s = read_session(nwb_paths[0])
    assert s.area == "VISp" and s.cre_line == "Cux2-CreERT2" and s.ei_class == "excitatory"
    assert s.session_type == "three_session_B"
    assert s.imaging_depth == 175
    assert s.n_templates == 118
    assert len(s.stimulus) == small_cfg["n_repeats"] * 119
    assert list(s.stimulus.columns) == ["frame", "start", "end"]
    assert s.stimulus.start.is_monotonic_increasing
    blocks = list(s.dff_blocks(4))
    assert [b[0].start for b in blocks] == list(range(0, s.n_cells, 4))
    assert all(b[1].dtype == np.float32 for b in blocks)


def test_reader_casts_dtypes(nwb_copy):
    """Other dtypes than the real files' (float64 traces, float frame indices) still read."""
    with h5py.File(nwb_copy, "r+") as f:
        d = f[f"{P}/DfOverF/imaging_plane_1/data"][()]
        del f[f"{P}/DfOverF/imaging_plane_1/data"]
        f[f"{P}/DfOverF/imaging_plane_1/data"] = d.astype(np.float64)
        g = f["stimulus/presentation/natural_scenes_stimulus"]
        data = g["data"][()]
        del g["data"]
        g["data"] = data.astype(np.int32)
    s = read_session(nwb_copy)
    assert next(s.dff_blocks(100))[1].dtype == np.float32
    assert s.stimulus.frame.dtype == np.int64


def test_not_hdf5(tmp_path):
    bad = tmp_path / "123.nwb"
    bad.write_text("<html>404 Not Found</html>")
    with pytest.raises(NWBError, match=r"123\.nwb.*not a readable HDF5"):
        read_session(bad)


def test_truncated(nwb_copy):
    size = nwb_copy.stat().st_size
    with open(nwb_copy, "r+b") as f:
        f.truncate(size // 3)
    with pytest.raises(NWBError, match=str(nwb_copy.name)):
        s = read_session(nwb_copy)
        list(s.dff_blocks(1000))


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.nwb"):
        read_session(tmp_path / "nope.nwb")


def test_missing_natural_scenes_group(nwb_copy):
    with h5py.File(nwb_copy, "r+") as f:
        f.move(
            "stimulus/presentation/natural_scenes_stimulus",
            "stimulus/presentation/static_gratings_stimulus",
        )
    with pytest.raises(NWBError, match="natural scenes.*three_session_B"):
        read_session(nwb_copy)


def test_template_table_mismatch(nwb_copy):
    with h5py.File(nwb_copy, "r+") as f:
        t = f["stimulus/templates/natural_scenes_image_stack/data"][()]
        del f["stimulus/templates/natural_scenes_image_stack/data"]
        f["stimulus/templates/natural_scenes_image_stack/data"] = t[:100]
    with pytest.raises(NWBError, match="template/table mismatch"):
        read_session(nwb_copy)


def test_unknown_cre_line(nwb_copy):
    with h5py.File(nwb_copy, "r+") as f:
        del f["general/subject/genotype"]
        f["general/subject/genotype"] = np.bytes_(b"Foo-Cre/wt;Ai93/wt")
    with pytest.raises(NWBError, match="unknown Cre line 'Foo-Cre'"):
        read_session(nwb_copy)


def test_trace_shape_mismatch(nwb_copy):
    with h5py.File(nwb_copy, "r+") as f:
        ids = f[f"{P}/ImageSegmentation/cell_specimen_ids"][()]
        del f[f"{P}/ImageSegmentation/cell_specimen_ids"]
        f[f"{P}/ImageSegmentation/cell_specimen_ids"] = ids[:-1]
    with pytest.raises(NWBError, match="does not match"):
        read_session(nwb_copy)


def _poison(path, row, kind):
    """Make one cell's trace all zero ('zero') or give it a NaN ('nan')."""
    with h5py.File(path, "r+") as f:
        d = f[f"{P}/DfOverF/imaging_plane_1/data"]
        trace = d[row, :]
        if kind == "zero":
            trace[:] = 0
        else:
            trace[10] = np.nan
        d[row, :] = trace


def test_bad_traces_dropped_with_count(nwb_copy, tmp_path, caplog):
    _poison(nwb_copy, 1, "zero")
    _poison(nwb_copy, 3, "nan")
    s = read_session(nwb_copy)
    out = tmp_path / "e.zarr"
    with caplog.at_level("WARNING", logger="mice2machines"):
        summary = neural.convert_session(s, out, {"cell_block": 4})
    assert summary == {"cells": s.n_cells - 2, "dropped": 2}
    assert "dropped 2 of" in caplog.text

    ds = open_zarr(out)
    assert ds.sizes["cell"] == s.n_cells - 2
    assert s.cell_specimen_ids[1] not in ds.cell.values
    assert not np.isnan(ds.responses.values).any()


def test_bad_traces_error_leaves_no_output(nwb_copy, tmp_path):
    _poison(nwb_copy, 2, "nan")
    s = read_session(nwb_copy)
    out = tmp_path / "e.zarr"
    with pytest.raises(NWBError, match=rf"{nwb_copy.name}: cell \d+ has a NaN or all-zero"):
        neural.convert_session(s, out, {"bad_traces": "error", "cell_block": 4})
    assert [p.name for p in tmp_path.iterdir()] == [nwb_copy.name]
