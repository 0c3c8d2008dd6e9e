"""mice2machines: mouse visual cortex versus deep networks, and the NeuRN layer.

Kept import-light on purpose: `mice2machines.neural.allen` runs inside the allensdk environment
(numpy<1.24), so nothing here may import numpy 2-only code.
"""

__version__ = "0.1.0"

#: the Python API (`mice2machines.api`), imported on first use
API = ("score", "open_population", "open_stimuli", "open_activations", "open_scores")


def __getattr__(name: str):
    if name in API:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'mice2machines' has no attribute {name!r}")
