"""Synthetic retinal OCT B-scans with pixel-exact lesion masks: octlens runs with no download."""

from octlens.data.synth.scan import CLASSES, Scan, draw_patient, render_scan
from octlens.data.synth.writer import (
    GENERATOR,
    RECORD,
    plan_scans,
    read_record,
    render_job,
    synthesize,
)

__all__ = [
    "CLASSES",
    "GENERATOR",
    "RECORD",
    "Scan",
    "draw_patient",
    "plan_scans",
    "read_record",
    "render_job",
    "render_scan",
    "synthesize",
]
