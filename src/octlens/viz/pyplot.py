"""matplotlib's pyplot on the file-only Agg backend, chosen here once for every figure octlens
draws: figures are written to files, and no display is needed or used.

The backend's compiled module is imported here, not at the first ``savefig`` as matplotlib
would: that first save comes after a training epoch, and a Ctrl-C landing inside a compiled
module's initialisation surfaces as ``ImportError: initialization failed`` instead of an
interrupt, so the run would lose its "interrupted; add --resume" line.
"""

import matplotlib

matplotlib.use("Agg")

import matplotlib.backends.backend_agg  # loaded now: see the module docstring
from matplotlib import pyplot

__all__ = ["pyplot"]
