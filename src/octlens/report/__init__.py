"""The last stage: files and figures for people, built from runs, explainers and metrics."""

from octlens.report.explanations import explain_images

__all__ = ["explain_images"]
