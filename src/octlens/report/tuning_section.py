"""A hyper-parameter study in the report: the best settings, every trial, and the figures."""

from __future__ import annotations

import csv
from pathlib import Path

from octlens.errors import OctlensError
from octlens.files import read_json
from octlens.report.embed import figure_html, text

FIGURES = {
    "optimization_history.png": "Validation loss by trial",
    "param_importances.png": "Which settings mattered (fANOVA importance)",
}


def tuning_html(folder: Path) -> str:
    """The study written to ``folder`` by ``octlens tune``."""
    trials_csv, best_json = folder / "trials.csv", folder / "best_config.json"
    if not trials_csv.is_file() or not best_json.is_file():
        raise OctlensError(
            f"{folder}: not an 'octlens tune' folder (no trials.csv and best_config.json)"
        )
    with trials_csv.open(newline="") as handle:
        rows = list(csv.reader(handle))
    header, trials = rows[0], rows[1:]
    best = read_json(best_json)
    searched = [name for name in header[4:-1] if name in best]
    settings = ", ".join(f"{text(name)} = {text(best[name])}" for name in searched)
    table = "".join(
        "<tr>" + "".join(f"<td>{text(cell)}</td>" for cell in row) + "</tr>" for row in trials
    )
    figures = "".join(
        figure_html(title, folder / name)
        for name, title in FIGURES.items()
        if (folder / name).exists()
    )
    states = [row[1] for row in trials]
    return (
        f"<h2>Hyper-parameter search</h2><p>{text(folder)}: {len(trials)} trials "
        f"({states.count('complete')} complete, {states.count('pruned')} pruned, "
        f"{states.count('fail')} failed), minimizing the validation loss. Best settings: "
        f"{settings} (<code>octlens train --config {text(best_json)}</code>).</p>"
        "<table><tr>" + "".join(f"<th>{text(name)}</th>" for name in header) + "</tr>"
        f"{table}</table>{figures}"
    )
