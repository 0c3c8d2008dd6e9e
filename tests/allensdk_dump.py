"""Run inside the allensdk venv: dump what allensdk's own reader sees in an NWB file."""

import json
import sys

import numpy as np
from allensdk.core.brain_observatory_nwb_data_set import BrainObservatoryNwbDataSet

nwb, out = sys.argv[1], sys.argv[2]
ds = BrainObservatoryNwbDataSet(nwb)
t, dff = ds.get_dff_traces()
table = ds.get_stimulus_table("natural_scenes")
meta = ds.get_metadata()
np.savez(
    out,
    timestamps=t,
    dff=dff,
    cell_ids=ds.get_cell_specimen_ids(),
    frame=table["frame"].to_numpy(),
    start=table["start"].to_numpy(),
    end=table["end"].to_numpy(),
    template=ds.get_stimulus_template("natural_scenes"),
)
print(json.dumps({k: str(v) for k, v in meta.items()}))
