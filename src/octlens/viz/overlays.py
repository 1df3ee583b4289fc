"""Saliency overlays that read well on grayscale OCT.

The scan stays gray and the map is drawn in ``inferno`` (perceptually uniform, dark at zero) with
opacity rising with the map's value, so low-saliency regions show the untouched scan instead of
being tinted, and the layers under a hot spot stay visible.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib import cm, colormaps

from octlens.viz.pyplot import pyplot as plt

CMAP = "inferno"


def overlay_rgb(image: np.ndarray, heatmap: np.ndarray, max_alpha: float = 0.65) -> np.ndarray:
    """RGB (H, W, 3) of a [0, 1] grayscale image under a [0, 1] heatmap."""
    gray = np.repeat(image[..., None], 3, axis=2)
    colours = colormaps[CMAP](heatmap)[..., :3]
    alpha = max_alpha * heatmap[..., None]
    return (1 - alpha) * gray + alpha * colours


def save_overlay(image: np.ndarray, heatmap: np.ndarray, path: Path | str) -> None:
    """The overlay as a PNG at ``path`` (whatever its suffix: a temporary name, to rename)."""
    plt.imsave(path, np.clip(overlay_rgb(image, heatmap), 0, 1), format="png")


def plot_explanation_grid(
    images: Sequence[np.ndarray],
    maps: Mapping[str, Sequence[np.ndarray] | np.ndarray],
    row_titles: Sequence[str],
    path: Path,
    title: str = "",
    outlines: Sequence[np.ndarray] | None = None,
) -> None:
    """Rows of scans, a column per method; maps are min-max scaled, so one colour bar serves all.
    ``outlines`` (a boolean mask per scan, such as its lesion) are drawn on every panel."""
    columns = 1 + len(maps)
    figure, axes = plt.subplots(
        len(images),
        columns,
        figsize=(2.6 * columns, 2.6 * len(images)),
        squeeze=False,
        constrained_layout=True,
    )
    for row, image in enumerate(images):
        axes[row, 0].imshow(image, cmap="gray", vmin=0, vmax=1)
        axes[row, 0].set_ylabel(row_titles[row], fontsize=8)
        for column, (method, method_maps) in enumerate(maps.items(), start=1):
            axes[row, column].imshow(overlay_rgb(image, method_maps[row]))
            if row == 0:
                axes[row, column].set_title(method)
        if outlines is not None and outlines[row].any():
            for axis in axes[row]:
                axis.contour(outlines[row], levels=[0.5], colors="cyan", linewidths=0.8)
        axes[0, 0].set_title("scan")
    for axis in axes.flat:
        axis.set_xticks([])
        axis.set_yticks([])
    figure.colorbar(
        cm.ScalarMappable(cmap=CMAP), ax=axes[:, -1], shrink=0.5, label="saliency (min-max scaled)"
    )
    if title:
        figure.suptitle(title)
    figure.savefig(path, dpi=110)
    plt.close(figure)
