"""Evaluating a trained run on a dataset split: metrics, predictions and figures on disk."""

from __future__ import annotations

import csv
import io
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from octlens.data.dataset import ScansForEvaluation, collate_readable, left_out
from octlens.data.index import SINGLE_SPLIT, DatasetIndex, DataWarning, scan
from octlens.data.splits import split_samples
from octlens.errors import OctlensError
from octlens.evaluate.metrics import calibration_bins, classification_metrics
from octlens.evaluate.plots import plot_confusion_matrix, plot_reliability, plot_roc_curves
from octlens.files import require_writable_folder, write_json, write_text
from octlens.models import is_vit
from octlens.runtime import resolve_device, resolve_precision
from octlens.training.checkpoint import Checkpoint, load_checkpoint
from octlens.training.inference import predict_logits


def evaluate_run(
    run: str | Path,
    data: str | Path,
    split: str = "test",
    batch_size: int = 64,
    precision: str = "auto",
    device: str | None = None,
    num_workers: int = 0,
    out: str | Path | None = None,
) -> dict[str, Any]:
    """Evaluate ``run``'s best checkpoint on ``data``/``split``.

    Writes ``metrics.json``, ``predictions.csv``, ``confusion_matrix.png``, ``roc.png`` and
    ``reliability.png`` to ``out`` (default ``RUN/eval/<split>/``) and returns the metrics. A scan
    that cannot be decoded is left out, with a warning, and listed under ``unreadable``; the
    metrics also record the precision and a fingerprint of the data they were computed on.
    """
    require_positive(batch_size=batch_size)
    checkpoint, index = load_run_and_data(run, data)
    samples = split_samples(index, split, checkpoint.path.parent)
    warn_if_trained_on(checkpoint, index, split)
    fingerprint = index.fingerprint(samples)  # of the split asked for, scored or not
    plan = resolve_precision(precision, resolve_device(device), measuring=True)
    out = require_writable_folder(Path(out) if out else checkpoint.path.parent / "eval" / split)
    dataset = ScansForEvaluation(
        index, samples, checkpoint.eval_transform(), decode_size=checkpoint.img_size
    )
    model = checkpoint.build_model().to(plan.device)
    channels_last = not is_vit(model)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    loader = DataLoader(
        dataset, batch_size=batch_size, num_workers=num_workers, collate_fn=collate_readable
    )
    logits, positions = predict_logits(model, loader, plan, channels_last)
    unreadable = left_out(index, samples, set(positions.tolist()))
    samples = [samples[p] for p in positions.tolist()]
    probs = torch.softmax(logits, dim=1).numpy()
    labels = np.array([sample.label for sample in samples])

    metrics = classification_metrics(labels, probs, index.classes)
    metrics.update(
        {
            "checkpoint": str(checkpoint.path),
            "data": str(index.root),
            "split": split,
            "data_fingerprint": fingerprint,
            "precision": plan.name,
            "unreadable": [str(sample.path) for sample in unreadable],
            "model": checkpoint.meta["model"]["name"],
            "epoch": checkpoint.meta["epoch"],
        }
    )
    write_json(out / "metrics.json", metrics)
    write_text(out / "predictions.csv", _predictions_csv(samples, labels, probs, index.classes))
    plot_confusion_matrix(
        np.array(metrics["confusion_matrix"]), index.classes, out / "confusion_matrix.png"
    )
    plot_roc_curves(labels, probs, index.classes, out / "roc.png")
    ece, bins = calibration_bins(labels, probs)
    plot_reliability(bins, ece, out / "reliability.png")
    return metrics


def warn_if_trained_on(checkpoint: Checkpoint, index: DatasetIndex, split: str) -> None:
    """Warn when ``split`` is the one the run learned from: its scores would be inflated."""
    trained_on = checkpoint.meta.get("config", {}).get("train_split")
    single = list(index.splits) == [SINGLE_SPLIT] and split == SINGLE_SPLIT
    same_data = (
        Path(checkpoint.meta.get("data", {}).get("root", "")).resolve()
        == Path(index.root).resolve()
    )
    if same_data and (split == trained_on or single):
        warnings.warn(
            f"{index.root}: '{split}' holds the scans {checkpoint.path.parent} was trained on; "
            "its scores say nothing about new patients",
            DataWarning,
            stacklevel=3,
        )


def require_positive(**values: int | None) -> None:
    """One-line errors for counts that must be at least 1 (``None`` means "the default")."""
    for name, value in values.items():
        if value is not None and value < 1:
            raise OctlensError(f"--{name.replace('_', '-')} {value}: must be at least 1")


def load_run_and_data(run: str | Path, data: str | Path) -> tuple[Checkpoint, DatasetIndex]:
    """``run``'s best checkpoint and ``data``'s index, refusing data of other classes."""
    checkpoint = load_checkpoint(run)
    index = scan(data)
    if index.classes != checkpoint.classes:
        raise OctlensError(
            f"{data}: classes {index.classes} do not match the checkpoint's "
            f"{checkpoint.classes} ({checkpoint.path})"
        )
    return checkpoint, index


def _predictions_csv(samples, labels, probs, classes) -> str:
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["path", "patient", "label", "prediction", *[f"p_{c}" for c in classes]])
    for sample, label, row in zip(samples, labels, probs, strict=True):
        writer.writerow(
            [
                str(sample.path),
                sample.patient,
                classes[label],
                classes[int(row.argmax())],
                *[f"{p:.6f}" for p in row],
            ]
        )
    return text.getvalue()
