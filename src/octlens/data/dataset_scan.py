"""The confound scan of a dataset, end to end: index it, score every feature group
(:mod:`octlens.data.confounds`), and write ``confounds.json`` and ``confounds.png``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from octlens.data.confounds import PERMUTATIONS, ConfoundReport, scan_confounds
from octlens.data.index import scan
from octlens.data.patients import PatientSource
from octlens.errors import require_positive
from octlens.files import atomic_write, require_writable_folder
from octlens.viz.pyplot import pyplot as plt

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


def plot_confounds(report: ConfoundReport, path: Path) -> None:
    """Balanced accuracy per feature group beside chance and the shuffled labels' 95th
    percentile; flagged groups in red, context groups hatched."""
    names = list(report.groups)
    groups = [report.groups[name] for name in names]
    accuracy = [group.balanced_accuracy or group.chance for group in groups]
    colors = ["tab:red" if g.flagged else "tab:blue" for g in groups]
    figure, axis = plt.subplots(figsize=(8, 3.6), constrained_layout=True)
    bars = axis.bar(names, accuracy, color=colors)
    for bar, group in zip(bars, groups, strict=True):
        if group.kind == "context":
            bar.set_hatch("//")
            bar.set_alpha(0.6)
        if group.null_95 is not None:
            x = bar.get_x()
            axis.plot([x, x + bar.get_width()], [group.null_95] * 2, color="black", lw=1)
        label = "constant" if group.p_value is None else f"p={group.p_value:.3f}"
        axis.annotate(
            label,
            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            ha="center",
            va="bottom",
            fontsize=8,
        )
    axis.axhline(groups[0].chance, color="gray", linestyle="--", label="chance")
    axis.set(
        ylabel="balanced accuracy (grouped CV)",
        ylim=(0, 1),
        title=f"Can the label be read off non-anatomy? {report.n_scans} scans, "
        f"{report.who} (black: 95% of shuffled labels; red: flagged)",
    )
    axis.title.set_fontsize(9)
    axis.legend(fontsize=8)
    atomic_write(path, lambda tmp: figure.savefig(tmp, dpi=110, format="png"))
    plt.close(figure)
