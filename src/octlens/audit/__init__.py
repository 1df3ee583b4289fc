"""Judging explanations and the model: faithfulness, localization and sanity metrics as pure
tensor functions, counterfactual region tests and the shortcut rule, and the audit that runs
them on a trained run. (The confound scan of a dataset, which needs no model, is
:func:`octlens.data.confound_scan`.)"""

from octlens.audit.pipeline import audit_run
from octlens.audit.result import AuditResult

__all__ = ["AuditResult", "audit_run"]
