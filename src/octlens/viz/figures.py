"""Teaching figures: a labelled sample batch and a ViT's view of a scan as numbered patches."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from octlens.viz.pyplot import pyplot as plt


def plot_sample_batch(
    images: Sequence[np.ndarray], labels: Sequence[str], path: Path, columns: int = 4
) -> None:
    """A grid of scans ([0, 1] grayscale) with their labels."""
    rows = -(-len(images) // columns)
    figure, axes = plt.subplots(
        rows, columns, figsize=(2.4 * columns, 2.4 * rows), squeeze=False, constrained_layout=True
    )
    for axis in axes.flat:
        axis.set_axis_off()
    for axis, image, label in zip(axes.flat, images, labels, strict=False):
        axis.imshow(image, cmap="gray", vmin=0, vmax=1)
        axis.set_title(label, fontsize=9)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_patchified(
    image: np.ndarray, patch_size: tuple[int, int], grid: tuple[int, int], path: Path
) -> None:
    """The scan cut into the ViT's patches, numbered in token order (row-major, after CLS).

    ``grid`` comes from the model (``octlens.models.ViTParts.grid``), where the patch grid is
    computed for every method, so the figure shows exactly the tokens the methods map.
    """
    height, width = image.shape
    (patch_h, patch_w), (grid_h, grid_w) = patch_size, grid
    figure, axes = plt.subplots(1, 2, figsize=(10, 5), constrained_layout=True)
    axes[0].imshow(image, cmap="gray", vmin=0, vmax=1)
    axes[0].set_title(f"scan ({height}x{width})")
    axes[1].imshow(image, cmap="gray", vmin=0, vmax=1)
    for k in range(1, grid_h):
        axes[1].axhline(k * patch_h - 0.5, color="#ffb000", linewidth=0.6)
    for k in range(1, grid_w):
        axes[1].axvline(k * patch_w - 0.5, color="#ffb000", linewidth=0.6)
    if grid_h * grid_w <= 256:
        for row in range(grid_h):
            for column in range(grid_w):
                axes[1].text(
                    (column + 0.5) * patch_w,
                    (row + 0.5) * patch_h,
                    str(1 + row * grid_w + column),
                    color="#ffb000",
                    fontsize=6,
                    ha="center",
                    va="center",
                )
    axes[1].set_title(
        f"{grid_h}x{grid_w} patches of {patch_h}x{patch_w} px = tokens 1..{grid_h * grid_w} "
        "(0 is CLS)"
    )
    for axis in axes:
        axis.set_axis_off()
    figure.savefig(path, dpi=110)
    plt.close(figure)
