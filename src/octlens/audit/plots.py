"""Figures of the shortcut audit: perturbation curves, attention off the retina, sanity cascade,
the scans with the most off-retina attention, and the dataset confound scan."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from octlens.audit.faithfulness import PerturbationCurves
from octlens.audit.sanity import PASS_BELOW, SanityResult
from octlens.viz import overlay_rgb
from octlens.viz.pyplot import pyplot as plt


def plot_perturbation_curves(
    curves: Mapping[str, PerturbationCurves], path: Path, title: str
) -> None:
    """Mean deletion and insertion curves per method, random maps dashed."""
    figure, axes = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    for name, curve in curves.items():
        style = {"linestyle": "--", "color": "gray"} if name == "random" else {}
        for axis, values, auc in (
            (axes[0], curve.deletion, curve.deletion_auc),
            (axes[1], curve.insertion, curve.insertion_auc),
        ):
            label = f"{name} (AUC {auc.mean():.3f})"
            axis.plot(curve.fractions, values.mean(dim=0), label=label, **style)
    for axis, kind in zip(
        axes, ("deletion: lower is better", "insertion: higher is better"), strict=True
    ):
        axis.set(xlabel="fraction of pixels changed", ylabel="target probability", title=kind)
        axis.legend(fontsize=8)
    figure.suptitle(title)
    figure.savefig(path, dpi=100)
    plt.close(figure)


def plot_attention_by_class(
    shares: Mapping[str, np.ndarray],
    class_of_scan: Sequence[str],
    area_share: float,
    path: Path,
    title: str,
) -> None:
    """Box plots of the off-retina attention share per method and class, with the area share."""
    classes = sorted(set(class_of_scan))
    figure, axes = plt.subplots(
        1,
        len(shares),
        figsize=(3.2 * len(shares), 3.6),
        squeeze=False,
        sharey=True,
        constrained_layout=True,
    )
    labels = np.array(class_of_scan)
    for axis, (method, values) in zip(axes[0], shares.items(), strict=True):
        axis.boxplot([values[labels == c] for c in classes], tick_labels=classes)
        axis.axhline(area_share, color="gray", linestyle="--", label="off-retina area")
        axis.set_title(method)
        axis.tick_params(axis="x", labelrotation=45)
    axes[0, 0].set_ylabel("share of attention off the retina")
    axes[0, 0].legend(fontsize=8)
    figure.suptitle(title)
    figure.savefig(path, dpi=100)
    plt.close(figure)


def plot_sanity(results: Mapping[str, SanityResult], path: Path, title: str) -> None:
    """Median similarity to the trained model's maps along the randomization cascade."""
    figure, axes = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    for name, result in results.items():
        for axis, values in ((axes[0], result.spearman), (axes[1], result.ssim)):
            axis.plot(result.stages, values.median(dim=1).values, marker="o", label=name)
    pass_line = "pass: below this once head and last block are random"
    axes[0].axhline(PASS_BELOW, color="gray", linestyle="--", label=pass_line)
    for axis, metric in zip(axes, ("Spearman rank correlation", "SSIM"), strict=True):
        axis.set(ylabel=f"median {metric}", xlabel="randomized down to")
        axis.tick_params(axis="x", labelrotation=60, labelsize=7)
        axis.legend(fontsize=8)
    figure.suptitle(f"{title}: cascading randomization")
    figure.savefig(path, dpi=100)
    plt.close(figure)


def plot_worst_scans(
    display: np.ndarray,
    retina: np.ndarray,
    maps: Mapping[str, np.ndarray],
    off_retina: Mapping[str, np.ndarray],
    names: Sequence[str],
    count: int,
    path: Path,
) -> None:
    """Per method (rows), its ``count`` scans with the most attention off the retina (cyan).

    ``maps`` are scaled to [0, 1] per scan.
    """
    count = min(count, len(display))
    figure, axes = plt.subplots(
        len(maps),
        count,
        figsize=(2.6 * count, 2.8 * len(maps)),
        squeeze=False,
        constrained_layout=True,
    )
    for row, (method, method_maps) in enumerate(maps.items()):
        for column, i in enumerate(np.argsort(-off_retina[method])[:count]):
            axis = axes[row, column]
            axis.imshow(overlay_rgb(display[i], method_maps[i]))
            axis.contour(retina[i], levels=[0.5], colors="cyan", linewidths=0.6)
            axis.set_title(f"{names[i]}\n{off_retina[method][i]:.0%} off retina", fontsize=7)
            axis.set_xticks([])
            axis.set_yticks([])
        axes[row, 0].set_ylabel(method)
    figure.savefig(path, dpi=100)
    plt.close(figure)
