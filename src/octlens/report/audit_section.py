"""The shortcut audit in the report: one table of methods x models, verdicts, and figures."""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from octlens.audit.pipeline import verdict_lines
from octlens.report.embed import figure_html, number, text

#: (column heading, key in a method's summary)
COLUMNS = (
    ("deletion AUC", "deletion_auc"),
    ("insertion AUC", "insertion_auc"),
    ("average drop", "average_drop"),
    ("pointing game", "pointing_game"),
    ("energy in lesion", "energy_in_lesion"),
    ("off-retina share", "off_retina"),
    ("corner share", "corners"),
)

FIGURES = (
    ("Scans with the most attention off the retina (cyan: retina)", "worst_off_retina.png"),
    ("Deletion and insertion (dashed: random maps)", "deletion_insertion.png"),
    ("Attention off the retina, per class", "off_retina_by_class.png"),
    ("Sanity check: cascading randomization", "sanity.png"),
)


def audit_table(audits: Sequence[dict[str, Any]]) -> str:
    """Rows of (model, method) with the audit's numbers; the best method per model starred."""
    header = "".join(f"<th>{html.escape(title)}</th>" for title, _ in COLUMNS)
    rows = []
    for audit in audits:
        for method, summary in audit["methods"].items():
            best = method == audit["best_method"]
            name = f"<b>{text(method)} &#9733;</b>" if best else text(method)
            cells = "".join(f"<td>{number(summary['all'].get(key))}</td>" for _, key in COLUMNS)
            verdict = "pass" if summary["sanity"]["passed"] else "<b>fail</b>"
            rows.append(
                f"<tr><th>{text(audit['model'])}</th><th>{name}</th>{cells}<td>{verdict}</td></tr>"
            )
        random = audit["random_baseline"]
        area = audit["area_share"]
        rows.append(
            f"<tr><th>{text(audit['model'])}</th><th><i>random maps / area</i></th>"
            f"<td>{number(random['deletion_auc'])}</td><td>{number(random['insertion_auc'])}</td>"
            f"<td></td><td></td><td>{number(area.get('lesion'))}</td>"
            f"<td>{number(area['off_retina'])}</td>"
            f"<td>{number(area['corners'])}</td><td></td></tr>"
        )
    return (
        "<h2>Shortcut audit</h2><p>Means over the audited scans (pointing game, energy: scans "
        "with a lesion). Deletion: lower is better; insertion: higher. Off-retina and corner "
        "share: attention outside the retina and in the four corners, beside the area those "
        "regions cover (what an even map would get). &#9733; best method: largest insertion "
        "minus deletion among those passing the sanity check.</p>"
        f"<table><tr><th>model</th><th>method</th>{header}<th>sanity</th></tr>"
        f"{''.join(rows)}</table>{''.join(verdict_html(a) for a in audits)}"
    )


def verdict_html(audit: dict[str, Any]) -> str:
    lines = "; ".join(html.escape(line) for line in verdict_lines(audit))
    return f"<p><b>{text(audit['model'])}</b>: {lines}.</p>"


def audit_figures(audit_dir: Path) -> str:
    return "".join(
        figure_html(title, audit_dir / name)
        for title, name in FIGURES
        if (audit_dir / name).exists()
    )
