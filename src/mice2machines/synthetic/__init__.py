"""Synthetic Visual Coding 2P sessions with planted receptive fields.

The generator writes NWB 1.x files in exactly the layout of the Allen Brain Observatory
(see `nwb.py` for the paths) so that the whole pipeline, and allensdk's own reader, can run
on them. Every neuron has a known receptive field (a Gabor for excitatory lines, a broader,
less selective difference of Gaussians for inhibitory ones) whose position and size depend on
area and Cre line; responses pass a static nonlinearity, Poisson spiking, a GCaMP-like
calcium kernel and noise. The planted parameters are written next to each file so later
stages can check that they recover the truth.

With a layer drive (config ``synthetic.drive.kind: layer``) each neuron is instead driven by one
unit of a known layer of a known zoo model (`model_layer_drive`, `layer_rates`), so the
comparison stage can check that this layer ranks first.
"""

from .cells import (  # noqa: F401
    firing_rates,
    plant_cells,
    rf_map,
    rf_maps,
)
from .drive import (  # noqa: F401
    DRIVE_MIX,
    DRIVE_VIEWS,
    layer_rates,
    layer_views,
    model_layer_drive,
    view_counts,
)
from .experiments import (  # noqa: F401
    AREA_RF,
    CELL_ID_BASE,
    CONTAINER_ID_BASE,
    EXPERIMENT_ID_BASE,
    FRAME_RATE_HZ,
    FRAMES_PER_PRESENTATION,
    INHIBITORY_SIZE_FACTOR,
    N_IMAGES,
    PRESENTATION_PERIOD_FRAMES,
    Experiment,
    experiment_table,
)
from .session import (  # noqa: F401
    calcium_kernel,
    genotype_for,
    presentation_sequence,
    simulate_session,
    write_experiment,
    write_manifest,
    write_nwb,
    write_session,
    write_template,
)
from .stimuli import (  # noqa: F401
    PHOTOS,
    make_stimuli,
)
