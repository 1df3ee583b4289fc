"""Evaluating classifiers and their explanations: clinical metrics, calibration, faithfulness,
localization, sanity checks and the shortcut audit, with their figures."""

from octlens.evaluate.audit import audit_run
from octlens.evaluate.metrics import calibration_bins, classification_metrics, urgent_referral
from octlens.evaluate.runner import evaluate_run

__all__ = [
    "audit_run",
    "calibration_bins",
    "classification_metrics",
    "evaluate_run",
    "urgent_referral",
]
