"""Judging explanations and the model: faithfulness, localization and sanity metrics as pure
tensor functions, the image regions and the shortcut flag rule, and the audit that runs them."""

from octlens.audit.pipeline import audit_run
from octlens.audit.result import AuditResult

__all__ = ["AuditResult", "audit_run"]
