"""Classification metrics for OCT classifiers, as clinicians and the OCT2017 paper report them.

Sensitivity and specificity per class (one class against the rest), the macro one-vs-rest ROC AUC,
Kermany et al.'s urgent-referral figures (CNV and DME need urgent referral; DRUSEN and NORMAL do
not), the confusion matrix, and the expected calibration error.

Data may hold only some of the model's classes. What is undefined then is None, never a number
a convention makes up: the sensitivity of a class without scans (sklearn's ``zero_division``
would give 0, a model missing every scan of it), the precision of a class never predicted.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support, roc_auc_score

from octlens.evaluate.result import (
    CalibrationBin,
    ClassificationMetrics,
    ClassMetrics,
    UrgentReferral,
)

URGENT_CLASSES = ("CNV", "DME")


def classification_metrics(
    labels: np.ndarray, probs: np.ndarray, classes: Sequence[str], n_bins: int = 15
) -> ClassificationMetrics:
    """All metrics of ``probs`` (N, C) against integer ``labels`` (N,)."""
    labels = np.asarray(labels)
    probs = np.asarray(probs, dtype=np.float64)
    predictions = probs.argmax(axis=1)
    indices = list(range(len(classes)))
    matrix = confusion_matrix(labels, predictions, labels=indices)
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, predictions, labels=indices, zero_division=0
    )
    total = matrix.sum()
    per_class = {}
    for i, name in enumerate(classes):
        true_pos = matrix[i, i]
        false_pos = matrix[:, i].sum() - true_pos
        negatives = total - matrix[i, :].sum()
        present, predicted = support[i] > 0, matrix[:, i].sum() > 0
        per_class[name] = ClassMetrics(
            sensitivity=float(recall[i]) if present else None,
            specificity=float((negatives - false_pos) / negatives) if negatives else None,
            precision=float(precision[i]) if predicted else None,
            f1=float(f1[i]) if present else None,
            support=int(support[i]),
            auc=_one_vs_rest_auc(labels == i, probs[:, i]),
        )
    aucs = [m.auc for m in per_class.values() if m.auc is not None]
    ece, bins = calibration_bins(labels, probs, n_bins)
    return ClassificationMetrics(
        n=len(labels),
        accuracy=float((predictions == labels).mean()),
        macro_auc=float(np.mean(aucs)) if aucs else None,
        per_class=per_class,
        urgent_referral=urgent_referral(labels, probs, classes),
        confusion_matrix=matrix.tolist(),
        ece=ece,
        calibration_bins=bins,
        absent_classes=[name for i, name in enumerate(classes) if not support[i]],
    )


def _one_vs_rest_auc(is_class: np.ndarray, scores: np.ndarray) -> float | None:
    """ROC AUC of one class against the rest; None when only one side is present."""
    if is_class.all() or not is_class.any():
        return None
    return float(roc_auc_score(is_class, scores))


def urgent_referral(
    labels: np.ndarray, probs: np.ndarray, classes: Sequence[str]
) -> UrgentReferral | None:
    """CNV+DME vs the rest: sensitivity and specificity of the argmax, and the AUC of P(urgent).

    None when the class set does not have both urgent classes (not an OCT2017-style dataset).
    """
    if not all(name in classes for name in URGENT_CLASSES):
        return None
    urgent = [classes.index(name) for name in URGENT_CLASSES]
    truly_urgent = np.isin(labels, urgent)
    called_urgent = np.isin(probs.argmax(axis=1), urgent)
    positives, negatives = truly_urgent.sum(), (~truly_urgent).sum()
    return UrgentReferral(
        sensitivity=(
            float((called_urgent & truly_urgent).sum() / positives) if positives else None
        ),
        specificity=(
            float((~called_urgent & ~truly_urgent).sum() / negatives) if negatives else None
        ),
        auc=_one_vs_rest_auc(truly_urgent, probs[:, urgent].sum(axis=1)),
    )


def calibration_bins(
    labels: np.ndarray, probs: np.ndarray, n_bins: int = 15
) -> tuple[float, list[CalibrationBin]]:
    """Expected calibration error of the top-class confidence, and its equal-width bins.

    ECE = sum_b (n_b / N) * |accuracy_b - confidence_b| over bins b of the confidence in
    (0, 1], each bin (lo, hi] (Guo et al., 2017).
    """
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    bins, ece = [], 0.0
    for lo, hi in itertools.pairwise(edges):
        inside = (confidence > lo) & (confidence <= hi)
        if not inside.any():
            continue
        accuracy, mean_confidence = correct[inside].mean(), confidence[inside].mean()
        ece += inside.mean() * abs(accuracy - mean_confidence)
        bins.append(
            CalibrationBin(
                lo=float(lo),
                hi=float(hi),
                count=int(inside.sum()),
                accuracy=float(accuracy),
                confidence=float(mean_confidence),
            )
        )
    return float(ece), bins
