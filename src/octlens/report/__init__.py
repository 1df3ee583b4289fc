"""The last stage: files and figures for people, from runs and their stored results."""

from octlens.report.html import training_data, write_report

__all__ = ["training_data", "write_report"]
