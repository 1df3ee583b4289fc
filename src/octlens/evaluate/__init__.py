"""Evaluating classifiers: clinical metrics, calibration, and their figures."""

from octlens.evaluate.metrics import calibration_bins, classification_metrics, urgent_referral
from octlens.evaluate.runner import evaluate_run

__all__ = [
    "calibration_bins",
    "classification_metrics",
    "evaluate_run",
    "urgent_referral",
]
