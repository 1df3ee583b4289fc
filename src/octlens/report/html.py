"""One self-contained HTML report of one or more runs, side by side, images embedded."""

from __future__ import annotations

import contextlib
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from octlens.audit.result import AuditResult
from octlens.data.images import UnreadableImageError, load_grayscale
from octlens.data.index import DatasetIndex, DataWarning, scan
from octlens.errors import OctlensError, require_positive
from octlens.evaluate import METRICS, EvaluationResult, evaluate_run
from octlens.explain import default_methods
from octlens.explain.runner import explain_images
from octlens.files import write_text
from octlens.models import is_vit, vit_parts
from octlens.report.audit_section import audit_figures, audit_table
from octlens.report.confounds_section import confounds_html
from octlens.report.embed import figure_html, number, text
from octlens.report.tuning_section import tuning_html
from octlens.training.run import Run
from octlens.viz import plot_patchified, plot_sample_batch

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
.runs { display: flex; gap: 2em; align-items: flex-start; }
.run { flex: 1; min-width: 0; }
img { max-width: 100%; }
table { border-collapse: collapse; margin: 0.5em 0; }
td, th { border: 1px solid #ccc; padding: 2px 8px; text-align: right; }
th { background: #f4f4f4; }
"""

# The report holds only inline styles and data-URI images: no script may run, nothing may load.
_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def write_report(
    runs: Sequence[str | Path],
    out: str | Path,
    data: str | Path | None = None,
    split: str = "test",
    scans_per_class: int = 1,
    confounds: str | Path | None = None,
    tune: str | Path | None = None,
) -> Path:
    """Write ``out`` (HTML) for ``runs``: metrics, curves, confusion matrices and explanations,
    and the shortcut audit of each run that has one (``RUN/audit/<split>/audit.json``, written by
    ``octlens audit``).

    With ``data``, each run is evaluated on ``split`` if it has not been yet (or was evaluated on
    other data: then afresh, for this report only), and explained on the first
    ``scans_per_class`` scans of each class (the same scans for every run); an audit of other
    data is an error. Without ``data``, stored results are shown with the data they came from.
    ``confounds`` is a folder written by ``octlens inspect --confounds``, shown before the runs;
    ``tune`` a folder written by ``octlens tune``, shown after them.
    """
    require_positive(scans_per_class=scans_per_class)
    out = Path(out)
    if out.is_dir():
        raise OctlensError(f"{out}: --out is a folder; give the HTML file to write")
    sections, scans, header = [], [], ""
    index = None
    loaded = [Run.load(run) for run in runs]
    if data is not None:
        index = scan(data)
        # the first run's split: the data's own, or the one it carved (splits.json)
        samples = loaded[0].samples(index, split) if loaded else index.split(split)
        files = [s for s in samples if s.index is None]  # explanations read files (not .npz)
        for label in range(len(index.classes)):
            scans += [s.path for s in files if s.label == label][:scans_per_class]
        shown = []
        for sample in samples:
            with contextlib.suppress(UnreadableImageError):  # evaluation names broken scans
                shown.append((sample, np.asarray(index.load(sample), np.float32) / 255))
            if len(shown) == 8:
                break
        with tempfile.TemporaryDirectory() as tmp:
            batch = Path(tmp) / "batch.png"
            plot_sample_batch(
                [pixels for _, pixels in shown],
                [f"{index.classes[s.label]} {s.path.name}" for s, _ in shown],
                batch,
            )
            header = figure_html("A sample of the data", batch)
    audits = []
    for run in loaded:
        sections.append(_run_section(run, index, split, scans))
        audit_path = run.audit_dir(split) / "audit.json"
        if audit_path.exists():
            audits.append(_matching(AuditResult.load(audit_path), audit_path, index, split, run))
    audit = audit_table(audits) if audits else ""
    dataset = confounds_html(Path(confounds)) if confounds is not None else ""
    runs_html = f"<div class='runs'>{''.join(sections)}</div>"
    study = tuning_html(Path(tune)) if tune is not None else ""
    body = f"<h1>octlens report</h1>{header}{dataset}{audit}{runs_html}{study}"
    write_text(
        out,
        f"<!doctype html><html><head><meta charset='utf-8'>"
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
        f"<title>octlens report</title><style>{_STYLE}</style></head><body>{body}</body></html>",
    )
    return out


def training_data(runs: Sequence[str | Path]) -> Path | None:
    """The dataset the runs were trained on, if they share one and it is still there."""
    roots = {_recorded_data(Run.load(run).checkpoint.meta) for run in runs}
    if len(roots) != 1 or None in roots:
        return None
    (root,) = roots
    return root if root is not None and root.exists() else None


def _recorded_data(meta: dict[str, Any]) -> Path | None:
    """The data folder a checkpoint records, or None when an edited file records none."""
    config = meta.get("config")
    data = config.get("data") if isinstance(config, dict) else None
    return Path(data) if isinstance(data, str) and data else None


def _matching(
    audit: AuditResult, path: Path, index: DatasetIndex | None, split: str, run: Run
) -> AuditResult:
    """``audit``, if it was computed on ``index``'s ``split`` (or no data was named); else an
    error: an audit is too costly to recompute behind the user's back."""
    if index is not None and not _same_data(audit.data_fingerprint, index, split, run):
        raise OctlensError(
            f"{path}: computed on {audit.data} ({audit.split}), not on {index.root} ({split}); "
            f"run 'octlens audit {run.folder} --data {index.root}' first"
        )
    return audit


def _same_data(fingerprint: object, index: DatasetIndex, split: str, run: Run) -> bool:
    """Whether a stored result's fingerprint is that of ``index``'s ``split``."""
    return fingerprint is not None and fingerprint == index.fingerprint(run.samples(index, split))


def _run_section(run: Run, index: DatasetIndex | None, split: str, scans: list[Path]) -> str:
    parts = [
        f"<h2>{text(run.name)} <small>({text(run.folder)})</small></h2>",
        f"<p>{text(run.img_size)} px, best epoch {text(run.info.epoch)}, classes "
        f"{text(', '.join(run.classes))}</p>",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        eval_dir = _evaluation(run, index, split, Path(tmp))
        if (eval_dir / METRICS).exists():
            parts.append(_metrics_table(EvaluationResult.load(eval_dir / METRICS)))
        figures = [("Learning curves", run.folder / "learning_curves.png")]
        figures += [
            (title, eval_dir / name)
            for title, name in (
                ("Confusion matrix", "confusion_matrix.png"),
                ("ROC", "roc.png"),
                ("Reliability", "reliability.png"),
            )
        ]
        parts += [figure_html(title, path) for title, path in figures if path.exists()]
    if scans:
        model = run.model()
        with tempfile.TemporaryDirectory() as tmp:
            explain_images(run, scans, default_methods(model), tmp)
            parts.append(figure_html("Explanations", Path(tmp) / "grid.png"))
            if is_vit(model):
                size = run.img_size
                image = np.asarray(load_grayscale(scans[0]).resize((size, size)), np.float32)
                patches = Path(tmp) / "patches.png"
                vit = vit_parts(model)
                plot_patchified(image / 255, vit.patch_size, vit.grid(image.shape), patches)
                parts.append(figure_html("What the ViT sees: patches and token order", patches))
    parts.append(audit_figures(run.audit_dir(split)))
    return f"<div class='run'>{''.join(parts)}</div>"


def _evaluation(run: Run, index: DatasetIndex | None, split: str, scratch: Path) -> Path:
    """The folder of the run's evaluation on ``split``: the stored one when it was computed on
    ``index`` (or no data was given), else a fresh one in ``scratch``, for this report only: a
    report never writes into a run folder (``octlens evaluate`` does, when asked)."""
    stored = run.eval_dir(split)
    if index is None:
        return stored
    if (stored / METRICS).exists():
        recorded = EvaluationResult.load(stored / METRICS).data_fingerprint
        if _same_data(recorded, index, split, run):
            return stored
        why = "was computed on other data" if recorded else "does not record its data"
        warnings.warn(
            f"{stored / METRICS} {why}; the report evaluates "
            f"{run.folder} on {index.root} ({split}) afresh",
            DataWarning,
            stacklevel=3,
        )
    evaluate_run(run.folder, index.root, split, out=scratch)
    return scratch


def _metrics_table(result: EvaluationResult) -> str:
    rows = [("accuracy", result.accuracy), ("macro AUC", result.macro_auc)]
    if (urgent := result.urgent_referral) is not None:  # an OCT2017-style class set
        rows += [
            ("urgent sensitivity", urgent.sensitivity),
            ("urgent specificity", urgent.specificity),
        ]
    rows.append(("ECE", result.ece))
    summary = "".join(f"<tr><th>{name}</th><td>{number(value)}</td></tr>" for name, value in rows)
    per_class = "".join(
        f"<tr><th>{text(name)}</th><td>{number(m.sensitivity)}</td>"
        f"<td>{number(m.specificity)}</td><td>{number(m.auc)}</td><td>{m.support}</td></tr>"
        for name, m in result.per_class.items()
    )
    left_out = len(result.unreadable)
    unreadable = f"; {left_out} unreadable scan(s) left out" if left_out else ""
    coverage = f"<p>{text(note)}</p>" if (note := result.coverage_note()) else ""
    return (
        f"<h3>{text(result.split)} split, {result.n} scans</h3>"
        f"<p>data: {text(result.data)}, precision {text(result.precision)}{unreadable}</p>"
        f"{coverage}"
        f"<table>{summary}</table><table><tr><th>class</th><th>sensitivity</th>"
        f"<th>specificity</th><th>AUC</th><th>n</th></tr>{per_class}</table>"
    )
