"""Judging explanations and the model: faithfulness, localization and sanity metrics as pure
tensor functions, the image regions and the shortcut flag rule, and the audit that runs them."""

from octlens.audit.pipeline import audit_run, verdict_lines

__all__ = ["audit_run", "verdict_lines"]
