"""Evaluating classifiers: clinical metrics, calibration, and their figures."""

from octlens.evaluate.metrics import (
    calibration_bins,
    classification_metrics,
    invalid_metrics,
    invalid_note,
    urgent_referral,
)
from octlens.evaluate.runner import evaluate_run

__all__ = [
    "calibration_bins",
    "classification_metrics",
    "evaluate_run",
    "invalid_metrics",
    "invalid_note",
    "urgent_referral",
]
