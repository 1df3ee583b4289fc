"""Classification metrics for OCT classifiers, as clinicians and the OCT2017 paper report them.

Sensitivity and specificity per class (one class against the rest), the macro one-vs-rest ROC AUC,
Kermany et al.'s urgent-referral figures (CNV and DME need urgent referral; DRUSEN and NORMAL do
not), the confusion matrix, and the expected calibration error.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support, roc_auc_score

URGENT_CLASSES = ("CNV", "DME")


def classification_metrics(
    labels: np.ndarray, probs: np.ndarray, classes: Sequence[str], n_bins: int = 15
) -> dict[str, Any]:
    """All metrics of ``probs`` (N, C) against integer ``labels`` (N,), as plain JSON values."""
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
        per_class[name] = {
            "sensitivity": float(recall[i]),
            "specificity": float((negatives - false_pos) / negatives) if negatives else None,
            "precision": float(precision[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
            "auc": _one_vs_rest_auc(labels == i, probs[:, i]),
        }
    aucs = [m["auc"] for m in per_class.values() if m["auc"] is not None]
    ece, bins = calibration_bins(labels, probs, n_bins)
    return {
        "n": len(labels),
        "accuracy": float((predictions == labels).mean()),
        "macro_auc": float(np.mean(aucs)) if aucs else None,
        "per_class": per_class,
        "urgent_referral": urgent_referral(labels, probs, classes),
        "confusion_matrix": matrix.tolist(),
        "ece": ece,
        "calibration_bins": bins,  # the reliability diagram's data
    }


def _one_vs_rest_auc(is_class: np.ndarray, scores: np.ndarray) -> float | None:
    """ROC AUC of one class against the rest; None when only one side is present."""
    if is_class.all() or not is_class.any():
        return None
    return float(roc_auc_score(is_class, scores))


def urgent_referral(
    labels: np.ndarray, probs: np.ndarray, classes: Sequence[str]
) -> dict[str, float | None] | None:
    """CNV+DME vs the rest: sensitivity and specificity of the argmax, and the AUC of P(urgent).

    None when the class set does not have both urgent classes (not an OCT2017-style dataset).
    """
    if not all(name in classes for name in URGENT_CLASSES):
        return None
    urgent = [classes.index(name) for name in URGENT_CLASSES]
    truly_urgent = np.isin(labels, urgent)
    called_urgent = np.isin(probs.argmax(axis=1), urgent)
    positives, negatives = truly_urgent.sum(), (~truly_urgent).sum()
    return {
        "sensitivity": float((called_urgent & truly_urgent).sum() / positives)
        if positives
        else None,
        "specificity": (
            float((~called_urgent & ~truly_urgent).sum() / negatives) if negatives else None
        ),
        "auc": _one_vs_rest_auc(truly_urgent, probs[:, urgent].sum(axis=1)),
    }


def calibration_bins(
    labels: np.ndarray, probs: np.ndarray, n_bins: int = 15
) -> tuple[float, list[dict[str, float]]]:
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
            {
                "lo": float(lo),
                "hi": float(hi),
                "count": int(inside.sum()),
                "accuracy": float(accuracy),
                "confidence": float(mean_confidence),
            }
        )
    return float(ece), bins


# The per-class fields that are shares (from 0 to 1); ``support`` is a count.
_CLASS_SHARES = ("sensitivity", "specificity", "precision", "f1", "auc")
_URGENT_SHARES = ("sensitivity", "specificity", "auc")


def invalid_metrics(metrics: Mapping[str, Any]) -> dict[str, str]:
    """Each stored metric no evaluation can give, by its dotted path, with the value found.

    ``metrics.json`` is a file anyone can edit, and Python's JSON parser reads ``NaN`` and
    ``Infinity``: a reader shows the values named here as invalid, never as numbers. A share
    (accuracy, AUCs, sensitivities, ECE, ...) must be a finite number from 0 to 1 and a count
    (``n``, ``support``) a whole number from 0; ``None`` is a metric that is undefined (an AUC
    of a class with no scans) and is valid. E.g. ``{"accuracy": "nan", "ece": "-0.1"}``.
    """
    shares: dict[str, object] = {
        name: metrics.get(name) for name in ("accuracy", "macro_auc", "ece")
    }
    counts: dict[str, object] = {"n": metrics.get("n")}
    urgent = metrics.get("urgent_referral")
    if isinstance(urgent, Mapping):
        shares |= {f"urgent_referral.{name}": urgent.get(name) for name in _URGENT_SHARES}
    per_class = metrics.get("per_class")
    for label, values in per_class.items() if isinstance(per_class, Mapping) else ():
        if isinstance(values, Mapping):
            shares |= {f"per_class.{label}.{name}": values.get(name) for name in _CLASS_SHARES}
            counts[f"per_class.{label}.support"] = values.get("support")
    invalid = {path: value for path, value in shares.items() if not _valid(value, share=True)}
    invalid |= {path: value for path, value in counts.items() if not _valid(value, share=False)}
    return {path: str(value)[:40] for path, value in invalid.items()}


def _valid(value: object, share: bool) -> bool:
    """None, or a finite number (a share from 0 to 1, a count whole and from 0)."""
    if value is None:
        return True
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return False
    return 0 <= value <= 1 if share else value >= 0 and float(value).is_integer()


def invalid_note(invalid: Mapping[str, str]) -> str:
    """The sentence a reader shows beside metrics it found invalid (see :func:`invalid_metrics`)."""
    found = ", ".join(f"{path} {value}" for path, value in invalid.items())
    return (
        "invalid values, not shown as numbers (no evaluation gives them: the file was edited or "
        f"damaged; run 'octlens evaluate' again): {found}"
    )
