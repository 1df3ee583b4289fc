"""One self-contained HTML report of one or more runs, side by side, images embedded."""

from __future__ import annotations

import html
import json
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from octlens.data.images import load_grayscale
from octlens.data.index import scan
from octlens.evaluate import evaluate_run
from octlens.explain import default_methods
from octlens.models import is_vit
from octlens.report.audit_section import audit_figures, audit_table
from octlens.report.embed import figure_html, number
from octlens.report.explanations import explain_images
from octlens.training.checkpoint import load_checkpoint
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


def write_report(
    runs: Sequence[str | Path],
    out: str | Path,
    data: str | Path | None = None,
    split: str = "test",
    scans_per_class: int = 1,
) -> Path:
    """Write ``out`` (HTML) for ``runs``: metrics, curves, confusion matrices and explanations,
    and the shortcut audit of each run that has one (``RUN/audit/<split>/audit.json``, written by
    ``octlens audit``).

    With ``data``, each run is evaluated on ``split`` if it has not been yet, and explained on the
    first ``scans_per_class`` scans of each class (the same scans for every run).
    """
    out = Path(out)
    sections, scans, header = [], [], ""
    if data is not None:
        index = scan(data)
        samples = index.split(split)
        for label in range(len(index.classes)):
            scans += [s.path for s in samples if s.label == label][:scans_per_class]
        with tempfile.TemporaryDirectory() as tmp:
            batch = Path(tmp) / "batch.png"
            plot_sample_batch(
                [np.asarray(index.load(s), np.float32) / 255 for s in samples[:8]],
                [f"{index.classes[s.label]} {s.path.name}" for s in samples[:8]],
                batch,
            )
            header = figure_html("A sample of the data", batch)
    audits = []
    for run in runs:
        sections.append(_run_section(Path(run), data, split, scans))
        audit_path = load_checkpoint(run).path.parent / "audit" / split / "audit.json"
        if audit_path.exists():
            audits.append(json.loads(audit_path.read_text()))
    audit = audit_table(audits) if audits else ""
    body = f"<h1>octlens report</h1>{header}{audit}<div class='runs'>{''.join(sections)}</div>"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        f"<!doctype html><html><head><meta charset='utf-8'><title>octlens report</title>"
        f"<style>{_STYLE}</style></head><body>{body}</body></html>"
    )
    return out


def _run_section(run: Path, data, split: str, scans: list[Path]) -> str:
    checkpoint = load_checkpoint(run)
    run_dir = checkpoint.path.parent
    meta = checkpoint.meta
    metrics_path = run_dir / "eval" / split / "metrics.json"
    if not metrics_path.exists() and data is not None:
        evaluate_run(run_dir, data, split)
    parts = [
        f"<h2>{html.escape(meta['model']['name'])} <small>({html.escape(str(run_dir))})"
        f"</small></h2>",
        f"<p>{meta['img_size']} px, best epoch {meta['epoch']}, classes "
        f"{html.escape(', '.join(meta['classes']))}</p>",
    ]
    if metrics_path.exists():
        parts.append(_metrics_table(json.loads(metrics_path.read_text())))
    for title, name in (
        ("Learning curves", "learning_curves.png"),
        ("Confusion matrix", f"eval/{split}/confusion_matrix.png"),
        ("ROC", f"eval/{split}/roc.png"),
        ("Reliability", f"eval/{split}/reliability.png"),
    ):
        if (run_dir / name).exists():
            parts.append(figure_html(title, run_dir / name))
    if scans:
        model = checkpoint.build_model()
        methods = default_methods(model)
        with tempfile.TemporaryDirectory() as tmp:
            explain_images(run_dir, scans, methods, tmp)
            parts.append(figure_html("Explanations", Path(tmp) / "grid.png"))
            if is_vit(model):
                size = meta["img_size"]
                image = np.asarray(load_grayscale(scans[0]).resize((size, size)), np.float32)
                patches = Path(tmp) / "patches.png"
                plot_patchified(image / 255, model.patch_embed.patch_size[0], patches)
                parts.append(figure_html("What the ViT sees: patches and token order", patches))
    parts.append(audit_figures(run_dir / "audit" / split))
    return f"<div class='run'>{''.join(parts)}</div>"


def _metrics_table(metrics: dict) -> str:
    urgent = metrics.get("urgent_referral") or {}
    rows = [
        ("accuracy", metrics["accuracy"]),
        ("macro AUC", metrics["macro_auc"]),
        ("urgent sensitivity", urgent.get("sensitivity")),
        ("urgent specificity", urgent.get("specificity")),
        ("ECE", metrics["ece"]),
    ]
    summary = "".join(f"<tr><th>{k}</th><td>{number(v)}</td></tr>" for k, v in rows)
    per_class = "".join(
        f"<tr><th>{html.escape(name)}</th><td>{number(m['sensitivity'])}</td>"
        f"<td>{number(m['specificity'])}</td><td>{number(m['auc'])}</td><td>{m['support']}</td></tr>"
        for name, m in metrics["per_class"].items()
    )
    return (
        f"<h3>{html.escape(metrics['split'])} split, {metrics['n']} scans</h3>"
        f"<table>{summary}</table><table><tr><th>class</th><th>sensitivity</th>"
        f"<th>specificity</th><th>AUC</th><th>n</th></tr>{per_class}</table>"
    )
