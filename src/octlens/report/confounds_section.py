"""The dataset confound scan in the report: its table, contingency tables and figure."""

from __future__ import annotations

from pathlib import Path

from octlens.data.confounds import ConfoundReport
from octlens.data.dataset_scan import FIGURE, REPORT
from octlens.report.embed import figure_html, number, text


def confounds_html(folder: Path) -> str:
    """The confound scan written to ``folder`` by ``octlens inspect --confounds``."""
    report = ConfoundReport.load(folder / REPORT)
    rows = "".join(
        f"<tr><th>{text(name)}</th><td>{text(group.kind)}</td>"
        f"<td>{'constant' if group.balanced_accuracy is None else number(group.balanced_accuracy)}"
        f"</td><td>{number(group.chance)}</td><td>{number(group.null_95)}</td>"
        f"<td>{number(group.p_value)}</td><td>{number(group.contingency_p)}</td>"
        f"<td>{'<b>flagged</b>' if group.flagged else ''}</td></tr>"
        for name, group in report.groups.items()
    )
    tables = "".join(_contingency(report, variable) for variable in report.contingency)
    figure = figure_html("Balanced accuracy per feature group", folder / FIGURE)
    return (
        f"<h2>Dataset confounds</h2><p>{text(report.data)} ({text(', '.join(report.splits))}: "
        f"{report.n_scans} scans, {report.who}). Can the label be predicted "
        f"from things that are not anatomy? A ridge classifier per feature group, "
        f"{report.folds}-fold cross-validation grouped by patient, balanced accuracy against "
        f"{report.permutations} shuffles of the labels ({text(report.shuffled)}); a confound "
        f"group is flagged at p &lt; {report.threshold:.4f} (0.05, Bonferroni). Flagged: "
        f"<b>{text(', '.join(report.flagged) or 'none')}</b>.</p>"
        "<table><tr><th>group</th><th>kind</th><th>balanced accuracy</th><th>chance</th>"
        "<th>shuffled 95%</th><th>p</th><th>contingency p</th><th></th></tr>"
        f"{rows}</table>{tables}{figure}"
    )


def _contingency(report: ConfoundReport, variable: str) -> str:
    header = "".join(f"<th>{text(name)}</th>" for name in report.classes)
    rows = "".join(
        f"<tr><th>{text(value)}</th>"
        + "".join(f"<td>{counts.get(name, 0)}</td>" for name in report.classes)
        + "</tr>"
        for value, counts in report.contingency[variable].items()
    )
    return f"<h3>{text(variable)} by class</h3><table><tr><th></th>{header}</tr>{rows}</table>"
