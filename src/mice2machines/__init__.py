"""mice2machines: mouse visual cortex versus deep networks, and the NeuRN layer.

Kept import-light on purpose: `mice2machines.neural.allen` runs inside the allensdk environment
(numpy<1.24), so nothing here may import numpy 2-only code.
"""

__version__ = "0.1.0"
