"""Inputs that cannot collide: a session's own id against its file's, each cell counted once;
temporaries of killed writers swept by the next writer."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest
import xarray as xr

from mice2machines.io import open_zarr, write_zarr_atomic
from mice2machines.neural import convert, population
from mice2machines.neural.nwb import NWBError, read_session


def _retag(src, dst, experiment_id: int) -> None:
    """A copy of an NWB file with another experiment id inside (general/session_id)."""
    shutil.copy(src, dst)
    with h5py.File(dst, "r+") as f:
        del f["general/session_id"]
        f["general/session_id"] = str(experiment_id)


def test_nwb_id_must_match_its_file_name(nwb_paths, tmp_path):
    src = nwb_paths[0]
    eid = int(src.stem)
    renamed = tmp_path / f"{eid + 1}.nwb"
    shutil.copy(src, renamed)
    with pytest.raises(NWBError, match=rf"{renamed}.*session_id.*is {eid}.*experiment {eid + 1}"):
        read_session(renamed)
    inside = tmp_path / f"{eid}.nwb"
    _retag(src, inside, eid + 7)
    with pytest.raises(NWBError, match=rf"is {eid + 7}, but it is stored as {eid}.nwb"):
        read_session(inside)
    # a name without an id is not checked by the reader; the store's name is, by convert
    plain = tmp_path / "session.nwb"
    shutil.copy(src, plain)
    session = read_session(plain)
    assert session.experiment_id == eid
    with pytest.raises(NWBError, match=rf"{plain}: its experiment id is {eid}, but .* {eid + 1}"):
        convert.convert_session(session, tmp_path / f"{eid + 1}.zarr")
    assert not list(tmp_path.glob(f"*{eid + 1}.zarr*"))  # refused before writing


def test_duplicate_cells_refused_at_population(nwb_paths, tmp_path):
    a, b = nwb_paths[:2]
    twin_id = int(a.stem) + 1000
    twin = tmp_path / f"{twin_id}.nwb"
    _retag(a, twin, twin_id)  # the same session (its cells) under another id
    stores = []
    for nwb in (a, b, twin):
        stores.append(tmp_path / f"{nwb.stem}.zarr")
        convert.convert_session(read_session(nwb), stores[-1])
    n = population.write_population(stores[:2], tmp_path / "ok.zarr")["cells"]
    assert n == 20 and open_zarr(tmp_path / "ok.zarr").cell.to_index().is_unique
    with pytest.raises(population.DuplicateCellsError) as err:
        population.write_population(stores, tmp_path / "pop.zarr")
    msg = str(err.value)
    assert f"{stores[0]} and {stores[2]}: 10 cells" in msg and str(stores[1]) not in msg
    assert not (tmp_path / "pop.zarr").exists()
    # one session converted twice (names without ids): the experiment is named
    again = tmp_path / "copy.zarr"
    convert.convert_session(read_session(a), again)
    with pytest.raises(population.DuplicateCellsError, match=rf"experiment {a.stem} is in two"):
        population.population_dataset([stores[0], again])


_WRITER = textwrap.dedent(
    """
    import sys, time
    import numpy as np, xarray as xr
    from mice2machines.io import atomic_path
    with atomic_path(sys.argv[1]) as tmp:
        xr.Dataset({"x": ("i", np.arange(1000.0))}).to_zarr(tmp, zarr_format=3, consolidated=False)
        print(tmp, flush=True)
        time.sleep(120)
    """
)


def test_killed_writers_temporary_swept_by_next_write(tmp_path):
    out = tmp_path / "store.zarr"
    other = tmp_path / ".store.zarr2.tmp-00000000"  # another path's temporary stays
    other.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(out)], stdout=subprocess.PIPE, text=True
    )
    try:
        tmp = proc.stdout.readline().strip()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    orphan = Path(tmp)
    assert orphan.parent == tmp_path and orphan.name.startswith(".store.zarr.tmp-")
    assert (orphan / "zarr.json").exists() and not out.exists()  # a killed writer's leftover
    ds = xr.Dataset({"x": ("i", np.arange(5.0))})
    write_zarr_atomic(ds, out)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([other.name, out.name])
    np.testing.assert_array_equal(open_zarr(out).x.values, np.arange(5.0))
