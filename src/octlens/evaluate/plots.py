"""Figures of an evaluation: confusion matrix, ROC curves, reliability diagram."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_curve

from octlens.evaluate.result import CalibrationBin
from octlens.viz.pyplot import pyplot as plt


def plot_confusion_matrix(matrix: np.ndarray, classes: Sequence[str], path: Path) -> None:
    """Counts, with each row (true class) shaded by its share, so rare classes read as well."""
    matrix = np.asarray(matrix)
    shares = matrix / np.clip(matrix.sum(axis=1, keepdims=True), 1, None)
    figure, axis = plt.subplots(figsize=(4.6, 4.0), constrained_layout=True)
    image = axis.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    for (row, column), count in np.ndenumerate(matrix):
        axis.text(
            column,
            row,
            str(count),
            ha="center",
            va="center",
            color="white" if shares[row, column] > 0.6 else "black",
        )
    axis.set_xticks(range(len(classes)), classes, rotation=30)
    axis.set_yticks(range(len(classes)), classes)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    figure.colorbar(image, ax=axis, label="share of true class")
    figure.savefig(path, dpi=120)
    plt.close(figure)


def plot_roc_curves(
    labels: np.ndarray, probs: np.ndarray, classes: Sequence[str], path: Path
) -> None:
    """One-vs-rest ROC curve of each class that has scans and scans of another class."""
    figure, axis = plt.subplots(figsize=(4.6, 4.2), constrained_layout=True)
    drawn = 0
    for i, name in enumerate(classes):
        is_class = labels == i
        if is_class.all() or not is_class.any():
            continue
        false_pos, true_pos, _ = roc_curve(is_class, probs[:, i])
        axis.plot(false_pos, true_pos, label=name)
        drawn += 1
    axis.plot([0, 1], [0, 1], color="0.7", linestyle="--", linewidth=1)
    axis.set_xlabel("1 - specificity")
    axis.set_ylabel("sensitivity")
    axis.set_title("one-vs-rest ROC")
    if drawn:
        axis.legend(frameon=False, loc="lower right")
    else:
        axis.text(0.5, 0.3, "no class has scans of\nits own and of another", ha="center")
    figure.savefig(path, dpi=120)
    plt.close(figure)


def plot_reliability(bins: Sequence[CalibrationBin], ece: float, path: Path) -> None:
    """Accuracy per confidence bin against the diagonal of perfect calibration."""
    figure, axis = plt.subplots(figsize=(4.4, 4.2), constrained_layout=True)
    for bin_ in bins:
        axis.bar(
            bin_.lo,
            bin_.accuracy,
            width=bin_.hi - bin_.lo,
            align="edge",
            color="tab:blue",
            edgecolor="white",
            alpha=0.8,
        )
    axis.plot([0, 1], [0, 1], color="0.4", linestyle="--", linewidth=1)
    axis.set_xlim(0, 1)
    axis.set_ylim(0, 1)
    axis.set_xlabel("confidence")
    axis.set_ylabel("accuracy")
    axis.set_title(f"reliability (ECE {ece:.3f})")
    figure.savefig(path, dpi=120)
    plt.close(figure)
