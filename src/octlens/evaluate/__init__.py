"""Evaluating classifiers: clinical metrics, calibration, and their figures."""

from octlens.evaluate.metrics import calibration_bins, classification_metrics, urgent_referral
from octlens.evaluate.result import ClassificationMetrics, EvaluationResult
from octlens.evaluate.runner import METRICS, evaluate_run

__all__ = [
    "METRICS",
    "ClassificationMetrics",
    "EvaluationResult",
    "calibration_bins",
    "classification_metrics",
    "evaluate_run",
    "urgent_referral",
]
