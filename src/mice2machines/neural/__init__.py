"""Neural data: labels, NWB readers, session conversion, the population store, reliability.

Kept import-light: `mice2machines.neural.allen` runs inside the allensdk environment
(numpy < 1.24), so nothing here may import numpy 2-only code.
"""
