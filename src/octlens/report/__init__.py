"""The last stage: files and figures for people, built from runs, explainers and metrics."""

from octlens.report.explanations import explain_images
from octlens.report.html import training_data, write_report

__all__ = ["explain_images", "training_data", "write_report"]
