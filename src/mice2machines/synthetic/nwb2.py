"""A Visual Coding NWB 1 file rewritten in the DANDI NWB 2 layout, with pynwb.

The same steps as catalystneuro/visual-coding-to-nwb-v2 (the converter behind dandiset 000728)
for the parts the workflow reads, quirks included: presentation indices cast to uint32 (a blank
becomes 4294967295), onset timestamps only, images cast to uint8 and named `NaturalScene{i}`,
dF/F transposed to (time, roi), cell specimen ids in `global_roi_id`, session id
`<experiment id>-StimB`, the container id and session type in the notes, and an imaging plane
description with a literal `{depth}`. Corrected, Neuropil and Demixed traces and the
contamination ratios are written too, so a file is as heavy as a real one relative to dF/F.
"""

from __future__ import annotations

import datetime
import os
from pathlib import Path

import h5py
import numpy as np

P = "processing/brain_observatory_pipeline"
DEPTH_TEMPLATE = (
    "The imaging plane sampled by the two-photon calcium imaging at a depth of {depth} µm."
)


def _text(value) -> str:
    value = value[()] if isinstance(value, h5py.Dataset) else value
    return value.decode() if isinstance(value, bytes) else str(value)


def _nwbfile(src: h5py.File):
    from pynwb import NWBFile
    from pynwb.file import Subject

    g = src["general"]
    experiment_id = _text(g["session_id"])
    session_type = _text(g["session_type"])
    start = datetime.datetime.strptime(_text(src["session_start_time"]), "%a %b %d %H:%M:%S %Y")
    return NWBFile(
        session_description="Visual Coding 2P session (synthetic).",
        identifier=f"{experiment_id}-{session_type}",
        session_start_time=start.replace(tzinfo=datetime.UTC),
        session_id=f"{experiment_id}-Stim{session_type.split('_')[-1]}",
        notes=(
            f"Container ID: {_text(g['experiment_container_id'])}"
            f"\nMouse ID (from genotype white paper): {_text(g['specimen_name']).split('-')[-1]}"
            f"\nSession type: {session_type}"
        ),
        subject=Subject(
            subject_id=_text(g["specimen_name"]).split("-")[-1],
            age=f"P{_text(g['subject/age']).split()[0]}D",
            sex="M" if _text(g["subject/sex"]) == "male" else "F",
            species="Mus musculus",
            genotype=_text(g["subject/genotype"]),
        ),
    )


def _ophys(nwbfile, src: h5py.File, depth_in_description: bool) -> None:
    from hdmf.common import DynamicTable, VectorData
    from pynwb.ophys import (
        DfOverF,
        Fluorescence,
        ImageSegmentation,
        OpticalChannel,
        PlaneSegmentation,
        RoiResponseSeries,
    )

    plane_src = src["general/optophysiology/imaging_plane_1"]
    device = nwbfile.create_device(name="Microscope", description="Nikon A1R-MP multiphoton")
    depth = _text(plane_src["imaging depth"]).split()[0]
    plane = nwbfile.create_imaging_plane(
        name="ImagingPlane",
        description=DEPTH_TEMPLATE.format(depth=depth) if depth_in_description else DEPTH_TEMPLATE,
        excitation_lambda=910.0,
        indicator="GCaMP6f",
        location=_text(plane_src["location"]),
        device=device,
        optical_channel=OpticalChannel(
            name="OpticalChannel", description="GCaMP", emission_lambda=np.nan
        ),
        grid_spacing=[0.78, 0.78],
        grid_spacing_unit="micrometers",
    )
    module = nwbfile.create_processing_module(name="ophys", description="processed ophys")
    seg = PlaneSegmentation(name="PlaneSegmentation", description="ROIs", imaging_plane=plane)
    seg.add_column(name="global_roi_id", description="cell specimen id")
    cell_ids = src[f"{P}/ImageSegmentation/cell_specimen_ids"][:]
    roi_ids = [int(_text(r)) for r in src[f"{P}/ImageSegmentation/roi_ids"][:]]
    for roi_id, cell_id in zip(roi_ids, cell_ids, strict=True):
        seg.add_roi(id=roi_id, pixel_mask=[(0, 0, 1.0)], global_roi_id=int(cell_id))
    module.add(ImageSegmentation(name="ImageSegmentation", plane_segmentations=seg))
    region = seg.create_roi_table_region(region=list(range(len(roi_ids))), description="ROIs")
    fl = f"{P}/Fluorescence"
    corrected = RoiResponseSeries(
        name="Corrected",
        data=src[f"{fl}/imaging_plane_1/data"][:].T,
        timestamps=src[f"{fl}/imaging_plane_1/timestamps"][:],
        unit="n.a.",
        rois=region,
    )
    fluorescence = Fluorescence(name="Fluorescence")
    module.add(fluorescence)  # first, so the series' ROI regions share an ancestor with the table
    fluorescence.add_roi_response_series(corrected)
    for name, key in (("Neuropil", "neuropil_response"), ("Demixed", "demixed_signal")):
        if f"{fl}/imaging_plane_1_{key}" in src:
            data = src[f"{fl}/imaging_plane_1_{key}/data"][:].T
            fluorescence.add_roi_response_series(
                RoiResponseSeries(
                    name=name, data=data, timestamps=corrected, unit="n.a.", rois=region
                )
            )
    df_over_f = DfOverF(name="DfOverF")
    module.add(df_over_f)
    dff = RoiResponseSeries(
        name="DfOverF",
        data=src[f"{P}/DfOverF/imaging_plane_1/data"][:].T,
        timestamps=corrected,
        unit="a.u.",
        rois=region,
    )
    df_over_f.add_roi_response_series(dff)
    r = src[f"{fl}/imaging_plane_1_neuropil_response/r"][:]
    module.add(
        DynamicTable(
            name="ContaminationRatios",
            description="neuropil contamination ratios",
            columns=[VectorData(name="ratios", description="r", data=r)],
        )
    )


def _stimulus(nwbfile, src: h5py.File, saturate: bool) -> None:
    from pynwb.image import Image, Images, IndexSeries

    stack = np.array(src["stimulus/templates/natural_scenes_image_stack/data"], dtype="uint8")
    images = Images(
        name="natural_scenes_template",
        description="natural scenes",
        images=[Image(name=f"NaturalScene{i}", data=stack[i]) for i in range(len(stack))],
    )
    nwbfile.add_stimulus_template(images)
    pres = src["stimulus/presentation/natural_scenes_stimulus"]
    nwbfile.add_stimulus(
        IndexSeries(
            name="natural_scenes_stimulus",
            description="The order and timing for presentation of the natural scene templates.",
            data=np.array(pres["data"], dtype="uint32")
            if saturate
            else pres["data"][:].astype("uint32"),
            indexed_images=images,
            unit="N/A",
            timestamps=pres["timestamps"][:],
        )
    )


def _running(nwbfile, src: h5py.File) -> None:
    from pynwb import TimeSeries
    from pynwb.behavior import BehavioralTimeSeries

    key = f"{P}/BehavioralTimeSeries/running_speed"
    if key not in src:
        return
    speed = TimeSeries(
        name="running_speed",
        data=src[f"{key}/data"][:],
        timestamps=src[f"{key}/timestamps"][:],
        unit="cm/s",
    )
    module = nwbfile.create_processing_module(name="behavior", description="behaviour")
    module.add(BehavioralTimeSeries(time_series=speed))


def write_dandi_session(
    nwb1: str | Path, out: str | Path, depth_in_description: bool = False, saturate: bool = False
) -> Path:
    """Rewrite the NWB 1 session `nwb1` as a DANDI-layout NWB 2 file at `out` (atomically).

    `depth_in_description` formats the depth into the imaging plane's description (the
    converter did not: its files say `{depth}`). Blanks (-1) wrap to 4294967295; with
    `saturate` they become 0, as the converter's own expression `numpy.array(h5py_dataset,
    dtype="uint32")` gives under h5py 3.16 (HDF5's conversion clips)."""
    from pynwb import NWBHDF5IO

    from ..io import atomic_path

    with h5py.File(nwb1, "r") as src:
        nwbfile = _nwbfile(src)
        _ophys(nwbfile, src, depth_in_description)
        _stimulus(nwbfile, src, saturate)
        _running(nwbfile, src)
        with atomic_path(out) as tmp:
            work = tmp.with_name(tmp.name + ".nwb")  # pynwb wants the extension
            with NWBHDF5IO(str(work), "w") as io:
                io.write(nwbfile)
            os.replace(work, tmp)
    return Path(out)
