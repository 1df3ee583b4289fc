"""The tables the command line prints: a dataset's splits and confounds, classifier metrics, the
audit and its counterfactual tests, and the demo's summary.

The audit table is drawn from the same column spec as the HTML report's
(:data:`octlens.audit.result.COLUMNS`), so the two always show the same numbers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from rich.table import Table

from octlens.audit.result import (
    COLUMNS,
    SWAP_HEADINGS,
    AuditResult,
    swap_cells,
    table_rows,
)
from octlens.data.confounds import ConfoundReport
from octlens.data.index import DatasetIndex
from octlens.evaluate import EvaluationResult
from octlens.report.embed import number

if TYPE_CHECKING:
    from octlens.training import TrainResult


def split_table(index: DatasetIndex) -> Table:
    """Images per split and class, and patients per split."""
    table = Table(title=str(index.root))
    table.add_column("split")
    for name in index.classes:
        table.add_column(name, justify="right")
    table.add_column("patients", justify="right")
    for split, samples in index.splits.items():
        counts = [sum(s.label == i for s in samples) for i in range(len(index.classes))]
        patients = len({s.patient for s in samples if s.patient})
        table.add_row(split, *map(str, counts), str(patients))
    return table


def audit_table(result: AuditResult) -> Table:
    """Methods x audit numbers for one run, the best method starred, the reference row last."""
    layer = f", CAMs at {result.layer}" if result.layer else ""
    sample = result.faithfulness_protocol.sample_note(result.n_scans)
    sample = f"; {sample}" if sample else ""
    table = Table(title=f"{result.model} on {result.split} ({result.n_scans} scans{layer}{sample})")
    for heading in ("method", *(column.heading(separator="\n") for column in COLUMNS), "sanity"):
        table.add_column(heading, justify="right", no_wrap=True)
    for row in table_rows(result):
        if row.sanity is None:
            name, verdict = row.method, ""
        else:
            name, verdict = (
                row.method + (" *" if row.best else ""),
                "pass" if row.sanity else "FAIL",
            )
        table.add_row(name, *(number(value) for value in row.values), verdict)
    return table


def metrics_table(result: EvaluationResult) -> Table:
    """Per-class sensitivity, specificity, precision, F1, AUC and support of one evaluation."""
    table = Table(
        title=f"{result.model} on {result.split} ({result.n} images): "
        f"accuracy {number(result.accuracy)}, macro AUC {number(result.macro_auc)}",
        caption=result.coverage_note(),
    )
    for column in ("class", "sensitivity", "specificity", "precision", "F1", "AUC", "support"):
        table.add_column(column, justify="right")
    for name, m in result.per_class.items():
        table.add_row(
            name,
            *(number(value) for value in (m.sensitivity, m.specificity, m.precision, m.f1, m.auc)),
            str(m.support),
        )
    return table


def demo_table(results: Mapping[str, tuple[EvaluationResult, TrainResult, AuditResult]]) -> Table:
    """One row per demo model: test metrics, training summary and the precision used."""
    table = Table(title="octlens demo: test split of the synthetic data")
    for column in (
        "model",
        "accuracy",
        "macro AUC",
        "urgent sens",
        "urgent spec",
        "ECE",
        "best epoch",
        "train img/s",
        "precision (train/eval)",
    ):
        table.add_column(column, justify="right", no_wrap=True)
    for name, (evaluation, result, _) in results.items():
        urgent = evaluation.urgent_referral
        speed = sum(row["images_per_s"] for row in result.history) / len(result.history)
        table.add_row(
            name,
            number(evaluation.accuracy),
            number(evaluation.macro_auc),
            number(urgent.sensitivity if urgent else None),
            number(urgent.specificity if urgent else None),
            number(evaluation.ece),
            f"{result.best_epoch}/{len(result.history)}",
            f"{speed:.0f}",
            f"{result.precision}/{evaluation.precision}",
        )
    return table


def counterfactual_table(result: AuditResult) -> Table:
    """Per swapped region: the flip-to-donor rate, both controls, the effect and the verdict."""
    evidence = result.counterfactual
    table = Table(
        title=f"{result.model}: counterfactual region swaps "
        f"({evidence.donors_per_scan} donors per scan; 95% bootstrap intervals)"
    )
    for heading in (*SWAP_HEADINGS, ""):
        table.add_column(heading, justify="right", no_wrap=True)
    for region, swap in evidence.swaps.items():
        if swap is None:
            table.add_row(region, "-", "one class predicted for every scan", "", "", "", "", "")
            continue
        table.add_row(region, *swap_cells(swap), "FLAGGED" if swap.flagged else "")
    return table


def confounds_table(report: ConfoundReport) -> Table:
    """Per feature group: balanced accuracy against chance, p-values and the flag."""
    table = Table(
        title=f"confound scan of {report.data} ({', '.join(report.splits)}: {report.n_scans} "
        f"scans, {report.who}; {report.folds}-fold CV grouped by patient, "
        f"{report.permutations} shuffles of {report.shuffled}; flag at p < {report.threshold:.4f})"
    )
    for heading in ("group", "kind", "balanced acc", "chance", "shuffled 95%", "p", "table p", ""):
        table.add_column(heading, justify="right", no_wrap=True)
    for name, group in report.groups.items():
        table.add_row(
            name,
            group.kind,
            "constant" if group.balanced_accuracy is None else number(group.balanced_accuracy),
            number(group.chance),
            number(group.null_95),
            number(group.p_value),
            number(group.contingency_p),
            "FLAGGED" if group.flagged else "",
        )
    return table


def contingency_table(report: ConfoundReport, variable: str) -> Table:
    """Scans per value of a categorical variable (size, format) and class."""
    table = Table(title=f"{variable} by class")
    table.add_column(variable)
    for name in report.classes:
        table.add_column(name, justify="right")
    for value, counts in report.contingency[variable].items():
        table.add_row(value, *(str(counts[name]) for name in report.classes))
    return table
