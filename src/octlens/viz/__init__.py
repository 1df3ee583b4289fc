"""Figures for people: heatmap overlays on grayscale OCT, grids of methods, teaching figures."""

from octlens.viz.figures import plot_patchified, plot_sample_batch
from octlens.viz.overlays import overlay_rgb, plot_explanation_grid, save_overlay

__all__ = [
    "overlay_rgb",
    "plot_explanation_grid",
    "plot_patchified",
    "plot_sample_batch",
    "save_overlay",
]
