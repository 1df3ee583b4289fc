"""What an evaluation measured, typed: ``metrics.json``, the terminal table, the HTML report, the
web app's run card and the demo all read an :class:`EvaluationResult`, as they read an
``AuditResult``.

Each number is declared with what it can be (a share from 0 to 1, a count from 0, ``None`` where
it is undefined, such as the AUC of a class without scans). ``metrics.json`` is a file anyone can
edit, and Python's JSON parser reads ``NaN`` and ``Infinity``: a file holding a value no
evaluation gives is refused at load with one line naming the field, so no reader can show it as a
number.
"""

from __future__ import annotations

from typing import Annotated, ClassVar

from pydantic import Field

from octlens.files import Record

#: A share of scans (accuracy, sensitivity, an AUC, the ECE...): finite, from 0 to 1.
Share = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False, strict=True)]
#: A number of scans.
Count = Annotated[int, Field(ge=0, strict=True)]


class ClassMetrics(Record):
    """One class against the rest."""

    sensitivity: Share | None  # None when the class has no scans
    specificity: Share | None  # None when every scan is of this class
    precision: Share | None  # None when no scan is predicted as this class
    f1: Share | None  # None when the class has no scans
    support: Count
    auc: Share | None  # None when the class has no scans, or only it has


class UrgentReferral(Record):
    """CNV and DME (urgent referral, Kermany et al.) against DRUSEN and NORMAL."""

    sensitivity: Share | None
    specificity: Share | None
    auc: Share | None


class CalibrationBin(Record):
    """One bin ``(lo, hi]`` of the top-class confidence: the reliability diagram's data."""

    lo: Share
    hi: Share
    count: Count
    accuracy: Share
    confidence: Share


class ClassificationMetrics(Record):
    """The metrics of a model's probabilities against the labels
    (:func:`octlens.evaluate.metrics.classification_metrics`)."""

    n: Count
    accuracy: Share
    macro_auc: Share | None  # None when no class has an AUC
    per_class: dict[str, ClassMetrics]
    urgent_referral: UrgentReferral | None  # None for a class set without CNV and DME
    confusion_matrix: list[list[Count]]  # rows: true class, columns: predicted class
    ece: Share
    calibration_bins: list[CalibrationBin]
    # the model's classes no scan belongs to: data that holds only some of them
    absent_classes: list[str] = Field(default_factory=list)

    def coverage_note(self) -> str | None:
        """What cannot be computed when the data holds only some of the model's classes, in one
        line; None when every class has scans."""
        if not self.absent_classes:
            return None
        present = [name for name in self.per_class if name not in self.absent_classes]
        auc = (
            f"the macro AUC averages {', '.join(present)}"
            if self.macro_auc is not None
            else "no class has an AUC (it needs scans of the class and of another)"
        )
        return (
            f"the data holds {len(present)} of the model's {len(self.per_class)} classes: "
            f"{', '.join(self.absent_classes)} have no scans, so no sensitivity or AUC for "
            f"them; {auc}"
        )


class EvaluationResult(ClassificationMetrics):
    """An evaluation of one run on one split (``metrics.json``): its metrics and what they were
    computed from."""

    what: ClassVar[str] = "an evaluation"
    remedy: ClassVar[str] = "run 'octlens evaluate' again"

    checkpoint: str
    data: str
    split: str
    # of the split's scans (octlens.data.index.DatasetIndex.fingerprint); None in evaluations
    # written before octlens recorded it, which a report given data computes afresh
    data_fingerprint: str | None = None
    precision: str
    unreadable: list[str]  # scans left out because they could not be decoded
    model: str
    epoch: int
