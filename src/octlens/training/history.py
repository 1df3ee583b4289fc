"""The per-epoch record of a run: ``history.csv`` and the learning-curve figure."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from octlens.files import atomic_write, write_text
from octlens.viz.pyplot import pyplot as plt

FIELDS = (
    "epoch",
    "lr",
    "train_loss",
    "train_acc",
    "val_loss",
    "val_acc",
    "seconds",
    "images_per_s",
)


def write_history(rows: list[dict[str, Any]], path: Path) -> None:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows({field: row[field] for field in FIELDS} for row in rows)
    write_text(path, text.getvalue())


def read_history(path: Path) -> list[dict[str, float]]:
    with open(path, newline="") as handle:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(handle)]


def best_epoch(rows: list[dict[str, Any]]) -> int:
    """The epoch with the lowest validation loss, the first of equals: a later epoch must
    improve on it to take its place, as early stopping counts an improvement. ``best`` is this
    epoch's checkpoint, and the learning curves mark it."""
    return min(rows, key=lambda row: row["val_loss"])["epoch"]


def patience_exhausted(rows: list[dict[str, Any]], patience: int | None) -> bool:
    """No validation-loss improvement in the last ``patience`` epochs (never without one)."""
    if patience is None or not rows:
        return False
    return rows[-1]["epoch"] - best_epoch(rows) >= patience


def plot_learning_curves(rows: list[dict[str, Any]], path: Path, title: str = "") -> None:
    """Train vs validation loss and accuracy per epoch; the best epoch (lowest val loss) marked.

    A validation loss that turns up while the training loss keeps falling is overfitting, and
    this is the picture that shows it.
    """
    epochs = [row["epoch"] for row in rows]
    best = best_epoch(rows)
    figure, axes = plt.subplots(1, 2, figsize=(10, 3.8), constrained_layout=True)
    for axis, metric, label in ((axes[0], "loss", "loss"), (axes[1], "acc", "accuracy")):
        axis.plot(epochs, [row[f"train_{metric}"] for row in rows], "o-", label="train")
        axis.plot(epochs, [row[f"val_{metric}"] for row in rows], "s-", label="validation")
        axis.axvline(best, color="0.6", linestyle="--", linewidth=1, label=f"best epoch ({best})")
        axis.set_xlabel("epoch")
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
        axis.legend(frameon=False)
    if title:
        figure.suptitle(title)
    try:
        atomic_write(path, lambda tmp: figure.savefig(tmp, dpi=120, format="png"))
    finally:
        plt.close(figure)
