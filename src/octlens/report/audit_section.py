"""The shortcut audit in the report: one table of methods x models, verdicts, the counterfactual
region swaps, the explanation clusters, and figures."""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path

from octlens.audit.counterfactual import MIN_EFFECT, MIN_PROBABILITY_DROP
from octlens.audit.result import (
    COLUMNS,
    SWAP_HEADINGS,
    AuditResult,
    swap_cells,
    table_rows,
)
from octlens.data.regions import Region
from octlens.report.embed import figure_html, number, text

REGIONS: tuple[str, ...] = (Region.OFF_RETINA, Region.BORDER, Region.CORNERS, Region.FILL)
FIGURES = (
    ("Scans with the most attention off the retina (cyan: retina)", "worst_off_retina.png"),
    ("Deletion and insertion (dashed: random maps)", "deletion_insertion.png"),
    ("Attention off the retina, per class", "off_retina_by_class.png"),
    ("Sanity check: cascading randomization", "sanity.png"),
)


def audit_table(audits: Sequence[AuditResult]) -> str:
    """Rows of (model, method) with the audit's numbers; the best method per model starred."""
    header = "".join(f"<th>{html.escape(column.heading(long=True))}</th>" for column in COLUMNS)
    rows = []
    for audit in audits:
        for row in table_rows(audit):
            if row.sanity is None:
                name, verdict = f"<i>{html.escape(row.method)}</i>", ""
            else:
                name = f"<b>{text(row.method)} &#9733;</b>" if row.best else text(row.method)
                verdict = "pass" if row.sanity else "<b>fail</b>"
            cells = "".join(f"<td>{number(value)}</td>" for value in row.values)
            rows.append(
                f"<tr><th>{text(audit.model)}</th><th>{name}</th>{cells}<td>{verdict}</td></tr>"
            )
    return (
        "<h2>Shortcut audit</h2><p>Means over the audited scans (pointing game, energy, pixel "
        "AUROC and within-retina AUROC: scans with a lesion); each heading's arrow says which "
        "way is better. Beside the methods, maps that never looked at the model: random maps, "
        "a map uniform over the retina and one peaked where the retina is thickest; a method "
        "finds lesions only where it beats the stronger of the two priors. Off-retina "
        "and corner share: attention outside the retina and in the four corners, beside the area "
        "those regions cover (what an even map would get). &#9733; best method: largest "
        "insertion minus deletion among those passing the sanity check.</p>"
        f"<table><tr><th>model</th><th>method</th>{header}<th>sanity</th></tr>"
        f"{''.join(rows)}</table>{''.join(sample_html(a) for a in audits)}"
        f"{''.join(verdict_html(a) for a in audits)}"
        "<h3>Counterfactual region swaps</h3><p>The region's pixels off the retina, pasted from "
        "scans the model puts in another class: how often the prediction moves to the donor's "
        "class, beside the same pixels pasted elsewhere and a swap from the scan's own class "
        "(effect: flip rate minus the larger control; 95% bootstrap intervals). A region is "
        f"flagged when the effect is at least {MIN_EFFECT:.0%}, its interval is above 0, both "
        "controls exist and the swap lowers the probability of the predicted class by at least "
        f"{MIN_PROBABILITY_DROP:.0%} on average.</p>"
        f"{''.join(counterfactual_html(a) for a in audits)}"
        "<h3>Explanation clusters</h3><p>Scans of each predicted class grouped by where the "
        "maps put their attention (spectral clustering, eigengap): a small group with a large "
        "corner or off-retina share is a group the model handles differently.</p>"
        f"{''.join(clusters_html(a) for a in audits)}"
    )


def sample_html(audit: AuditResult) -> str:
    """Which scans the faithfulness columns rest on, when they are a sample."""
    note = audit.faithfulness_protocol.sample_note(audit.n_scans)
    return f"<p>{text(audit.model)}: {text(note)}.</p>" if note else ""


def counterfactual_html(audit: AuditResult) -> str:
    rows = []
    for region, swap in audit.counterfactual.swaps.items():
        if swap is None:
            rows.append(f"<tr><th>{text(region)}</th><td colspan=7>one class for every scan</td>")
            continue
        cells = (*swap_cells(swap), "<b>flagged</b>" if swap.flagged else "")
        rows.append(f"<tr><th>{text(region)}</th>{''.join(f'<td>{c}</td>' for c in cells)}</tr>")
    headings = "".join(f"<th>{heading}</th>" for heading in SWAP_HEADINGS)
    context = "".join(
        f"<li>{html.escape(line)}</li>" for line in audit.counterfactual.context_lines()
    )
    return (
        f"<p><b>{text(audit.model)}</b></p><table><tr>{headings}<th></th></tr>"
        f"{''.join(rows)}</table><ul>{context}</ul>"
    )


def clusters_html(audit: AuditResult) -> str:
    rows = "".join(
        f"<tr><th>{text(c.predicted)}</th><td>{c.size}</td>"
        + "".join(f"<td>{number(c.shares[region])}</td>" for region in REGIONS)
        + f"<td style='text-align:left'>{text(', '.join(Path(e).name for e in c.examples))}</td>"
        "</tr>"
        for c in audit.clusters
    )
    headings = "".join(f"<th>{region.replace('_', '-')}</th>" for region in REGIONS)
    return (
        f"<p><b>{text(audit.model)}</b> ({text(audit.clusters_method)} maps)</p><table><tr>"
        f"<th>predicted</th><th>scans</th>{headings}<th>examples</th></tr>{rows}</table>"
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
