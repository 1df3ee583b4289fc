"""The confound scan of a dataset, end to end: index it, score every feature group
(:mod:`octlens.audit.confounds`), and write ``confounds.json`` and ``confounds.png``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from octlens.audit.confounds import PERMUTATIONS, ConfoundReport, scan_confounds
from octlens.audit.plots import plot_confounds
from octlens.data.index import scan
from octlens.data.patients import PatientSource
from octlens.errors import require_positive
from octlens.files import require_writable_folder

REPORT = "confounds.json"
FIGURE = "confounds.png"


def confound_scan(
    data: str | Path,
    out: str | Path,
    splits: Sequence[str] | None = None,
    permutations: int = PERMUTATIONS,
    seed: int = 0,
    patients: PatientSource | None = None,
    verbose: bool = True,
) -> ConfoundReport:
    """Can the labels of ``data`` (the ``splits`` pooled; default all) be predicted from things
    that are not anatomy? Writes ``out/confounds.json`` and ``out/confounds.png``. The folds
    group scans by patient, the ids coming from ``patients`` when given.

    Example::

        report = confound_scan("../shared/data/oct2017-real", "runs/confounds", ["dev"])
        report.flagged, report.groups["size"].p_value, report.contingency["size"]
    """
    require_positive(permutations=permutations)
    out = require_writable_folder(Path(out))
    index = scan(data, patients=patients, verbose=verbose)
    report = scan_confounds(index, splits, permutations=permutations, seed=seed, verbose=verbose)
    report.save(out / REPORT)
    plot_confounds(report, out / FIGURE)
    return report
