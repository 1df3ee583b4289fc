"""Evaluating a trained run on a dataset split: metrics, predictions and figures on disk."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from octlens.data.dataset import OCTDataset
from octlens.data.index import DatasetIndex, scan
from octlens.data.transforms import Normalization, eval_transform
from octlens.errors import OctlensError
from octlens.evaluate.metrics import calibration_bins, classification_metrics
from octlens.evaluate.plots import plot_confusion_matrix, plot_reliability, plot_roc_curves
from octlens.models import is_vit
from octlens.training.checkpoint import Checkpoint, load_checkpoint
from octlens.training.inference import predict_logits
from octlens.training.precision import resolve_device, resolve_precision


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
    ``reliability.png`` to ``out`` (default ``RUN/eval/<split>/``) and returns the metrics.
    """
    checkpoint, index = load_run_and_data(run, data)
    samples = index.split(split)
    img_size = checkpoint.meta["img_size"]
    dataset = OCTDataset(
        index,
        samples,
        eval_transform(img_size, Normalization(**checkpoint.meta["normalization"])),
        decode_size=img_size,
    )
    plan = resolve_precision(precision, resolve_device(device))
    model = checkpoint.build_model().to(plan.device)
    channels_last = not is_vit(model)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers)
    logits, labels = predict_logits(model, loader, plan, channels_last)
    probs = torch.softmax(logits, dim=1).numpy()
    labels = labels.numpy()

    metrics = classification_metrics(labels, probs, index.classes)
    metrics.update(
        {
            "checkpoint": str(checkpoint.path),
            "data": str(index.root),
            "split": split,
            "model": checkpoint.meta["model"]["name"],
            "epoch": checkpoint.meta["epoch"],
        }
    )
    out = Path(out) if out else checkpoint.path.parent / "eval" / split
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    _write_predictions(out / "predictions.csv", samples, labels, probs, index.classes)
    plot_confusion_matrix(
        np.array(metrics["confusion_matrix"]), index.classes, out / "confusion_matrix.png"
    )
    plot_roc_curves(labels, probs, index.classes, out / "roc.png")
    ece, bins = calibration_bins(labels, probs)
    plot_reliability(bins, ece, out / "reliability.png")
    return metrics


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


def _write_predictions(path: Path, samples, labels, probs, classes) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
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
