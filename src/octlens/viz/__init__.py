"""Figures for people: heatmap overlays on grayscale OCT and grids of methods."""

from octlens.viz.overlays import plot_explanation_grid, save_overlay

__all__ = ["plot_explanation_grid", "save_overlay"]
