"""The shortcut audit in the report: one table of methods x models, verdicts, and figures."""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path

from octlens.audit.result import COLUMNS, REFERENCE_ROW, AuditResult, table_rows
from octlens.report.embed import figure_html, number, text

FIGURES = (
    ("Scans with the most attention off the retina (cyan: retina)", "worst_off_retina.png"),
    ("Deletion and insertion (dashed: random maps)", "deletion_insertion.png"),
    ("Attention off the retina, per class", "off_retina_by_class.png"),
    ("Sanity check: cascading randomization", "sanity.png"),
)


def audit_table(audits: Sequence[AuditResult]) -> str:
    """Rows of (model, method) with the audit's numbers; the best method per model starred."""
    header = "".join(f"<th>{html.escape(column.long)}</th>" for column in COLUMNS)
    rows = []
    for audit in audits:
        for row in table_rows(audit):
            if row.sanity is None:
                name, verdict = f"<i>{html.escape(REFERENCE_ROW)}</i>", ""
            else:
                name = f"<b>{text(row.method)} &#9733;</b>" if row.best else text(row.method)
                verdict = "pass" if row.sanity else "<b>fail</b>"
            cells = "".join(f"<td>{number(value)}</td>" for value in row.values)
            rows.append(
                f"<tr><th>{text(audit.model)}</th><th>{name}</th>{cells}<td>{verdict}</td></tr>"
            )
    return (
        "<h2>Shortcut audit</h2><p>Means over the audited scans (pointing game, energy, pixel "
        "AUROC: scans with a lesion). Deletion: lower is better; insertion: higher. Off-retina "
        "and corner share: attention outside the retina and in the four corners, beside the area "
        "those regions cover (what an even map would get). &#9733; best method: largest "
        "insertion minus deletion among those passing the sanity check.</p>"
        f"<table><tr><th>model</th><th>method</th>{header}<th>sanity</th></tr>"
        f"{''.join(rows)}</table>{''.join(verdict_html(a) for a in audits)}"
    )


def verdict_html(audit: AuditResult) -> str:
    lines = "; ".join(html.escape(line) for line in audit.verdict_lines())
    return f"<p><b>{text(audit.model)}</b>: {lines}.</p>"


def audit_figures(audit_dir: Path) -> str:
    return "".join(
        figure_html(title, audit_dir / name)
        for title, name in FIGURES
        if (audit_dir / name).exists()
    )
