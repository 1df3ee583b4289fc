"""Evaluating a trained run on a dataset split: metrics, predictions and figures on disk."""

from __future__ import annotations

import csv
import io
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from octlens.data.dataset import ScansForEvaluation, collate_readable, left_out
from octlens.data.index import SINGLE_SPLIT, DatasetIndex, DataWarning
from octlens.errors import require_positive
from octlens.evaluate.metrics import classification_metrics
from octlens.evaluate.plots import plot_confusion_matrix, plot_reliability, plot_roc_curves
from octlens.evaluate.result import EvaluationResult
from octlens.files import require_writable_folder, write_text
from octlens.models import is_vit
from octlens.progress import Advance, progress_bar
from octlens.runtime import resolve_device, resolve_precision
from octlens.training.inference import predict_logits
from octlens.training.run import Run

#: The evaluation's file in its folder (``RUN/eval/<split>/``): an :class:`EvaluationResult`.
METRICS = "metrics.json"


def evaluate_run(
    run: str | Path,
    data: str | Path,
    split: str = "test",
    batch_size: int = 64,
    precision: str = "auto",
    device: str | None = None,
    num_workers: int = 0,
    out: str | Path | None = None,
    verbose: bool = True,
) -> EvaluationResult:
    """Evaluate ``run``'s best checkpoint on ``data``/``split``.

    Writes ``metrics.json``, ``predictions.csv``, ``confusion_matrix.png``, ``roc.png`` and
    ``reliability.png`` to ``out`` (default ``RUN/eval/<split>/``) and returns the metrics. A scan
    that cannot be decoded is left out, with a warning, and listed under ``unreadable``; the
    metrics also record the precision and a fingerprint of the data they were computed on.
    A progress bar counts the scans (``verbose``, on a terminal).
    """
    require_positive(batch_size=batch_size)
    run_ = Run.load(run)
    index = run_.data(data, verbose)
    samples = run_.samples(index, split)
    warn_if_trained_on(run_, index, split)
    fingerprint = index.fingerprint(samples)  # of the split asked for, scored or not
    plan = resolve_precision(precision, resolve_device(device), measuring=True)
    out = require_writable_folder(Path(out) if out else run_.eval_dir(split))
    dataset = ScansForEvaluation(index, samples, run_.eval_transform(), run_.img_size)
    model = run_.model(plan)
    loader = DataLoader(
        dataset, batch_size=batch_size, num_workers=num_workers, collate_fn=collate_readable
    )
    with progress_bar(f"evaluating {split}", len(samples), verbose=verbose) as advance:
        batches = _counted_scans(loader, advance)
        logits, positions = predict_logits(model, batches, plan, channels_last=not is_vit(model))
    unreadable = left_out(index, samples, set(positions.tolist()))
    samples = [samples[p] for p in positions.tolist()]
    probs = torch.softmax(logits, dim=1).numpy()
    labels = np.array([sample.label for sample in samples])

    result = EvaluationResult(
        **dict(classification_metrics(labels, probs, index.classes)),
        checkpoint=str(run_.checkpoint.path),
        data=str(index.root),
        split=split,
        data_fingerprint=fingerprint,
        precision=plan.name,
        unreadable=[str(sample.path) for sample in unreadable],
        model=run_.name,
        epoch=run_.info.epoch,
    )
    result.save(out / METRICS)
    write_text(out / "predictions.csv", _predictions_csv(samples, labels, probs, index.classes))
    plot_confusion_matrix(
        np.array(result.confusion_matrix), index.classes, out / "confusion_matrix.png"
    )
    plot_roc_curves(labels, probs, index.classes, out / "roc.png")
    plot_reliability(result.calibration_bins, result.ece, out / "reliability.png")
    return result


def _counted_scans(
    loader: Iterable[tuple[torch.Tensor, torch.Tensor]], advance: Advance
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The loader's batches (images, positions of the scans), the bar advanced to the last
    position read, so scans left out as unreadable count as done too."""
    done = 0
    for images, positions in loader:
        yield images, positions
        if len(positions):
            reached = int(positions.max()) + 1
            advance(reached - done)
            done = reached


def warn_if_trained_on(run: Run, index: DatasetIndex, split: str) -> None:
    """Warn when ``split`` is the one the run learned from: its scores would be inflated."""
    meta = run.checkpoint.meta
    trained_on = meta.get("config", {}).get("train_split")
    single = list(index.splits) == [SINGLE_SPLIT] and split == SINGLE_SPLIT
    same_data = Path(meta.get("data", {}).get("root", "")).resolve() == Path(index.root).resolve()
    if same_data and (split == trained_on or single):
        warnings.warn(
            f"{index.root}: '{split}' holds the scans {run.folder} was trained on; "
            "its scores say nothing about new patients",
            DataWarning,
            stacklevel=3,
        )


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
