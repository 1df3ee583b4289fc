"""matplotlib's pyplot on the file-only Agg backend, chosen here once for every figure octlens
draws: figures are written to files, and no display is needed or used."""

import matplotlib

matplotlib.use("Agg")

from matplotlib import pyplot

__all__ = ["pyplot"]
