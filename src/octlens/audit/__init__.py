"""Judging explanations and the model: faithfulness, localization and sanity metrics as pure
tensor functions, the image regions, counterfactual region tests and the shortcut rule, the
audit that runs them on a trained run, and the confound scan of a dataset."""

from octlens.audit.dataset_scan import confound_scan
from octlens.audit.pipeline import audit_run
from octlens.audit.result import AuditResult

__all__ = ["AuditResult", "audit_run", "confound_scan"]
