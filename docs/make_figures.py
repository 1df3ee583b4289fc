"""Make the documentation's figures (run from the repository root).

.venv/bin/python docs/make_figures.py                  # synthetic vs real, retina on real
.venv/bin/python docs/make_figures.py --sheets DIR     # also every dev scan's retina, 36 a page
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from octlens.data.index import Sample, scan
from octlens.data.retina import find_retina
from octlens.data.synth import CLASSES, plan_scans, render_job
from octlens.data.synth.writer import with_sizes

REAL = Path("../shared/data/oct2017-real/dev")
OUT = Path("docs/images")


def synthetic_vs_real(seed: int = 3) -> None:
    """One synthetic (with its lesion outline) and one real dev scan per class."""
    real = scan(REAL)
    jobs = with_sizes(plan_scans(8, seed), None)  # OCT2017's sizes, as `synth` draws them
    figure, axes = plt.subplots(2, 4, figsize=(16, 8), constrained_layout=True)
    for column, label in enumerate(CLASSES):
        job = next(j for j in jobs if j.label == label and j.split == "train")
        synthetic = render_job(job)
        axes[0, column].imshow(synthetic.image, cmap="gray", vmin=0, vmax=255, aspect="auto")
        if synthetic.lesion.any():
            axes[0, column].contour(synthetic.lesion, levels=[0.5], colors="#ffb000", linewidths=1)
        axes[0, column].set_title(f"synthetic {label}")
        sample = next(s for s in real.split("all") if real.classes[s.label] == label)
        axes[1, column].imshow(
            np.asarray(real.load(sample)), cmap="gray", vmin=0, vmax=255, aspect="auto"
        )
        axes[1, column].set_title(f"real {label} ({sample.path.name})")
    for axis in axes.flat:
        axis.set_axis_off()
    figure.suptitle(
        "octlens synthetic OCT (top, lesion mask outlined) vs OCT2017 dev scans (bottom)"
    )
    OUT.mkdir(parents=True, exist_ok=True)
    figure.savefig(OUT / "synthetic_vs_real.png", dpi=80)
    plt.close(figure)


def retina_on_real(samples: list[Sample], path: Path, columns: int = 4) -> None:
    """Real scans with the label-free retina boundaries: ILM (cyan), Bruch's membrane (yellow)."""
    real = scan(REAL)
    rows = -(-len(samples) // columns)
    figure, axes = plt.subplots(
        rows, columns, figsize=(4 * columns, 3.2 * rows), squeeze=False, constrained_layout=True
    )
    for axis in axes.flat:
        axis.set_axis_off()
    for axis, sample in zip(axes.flat, samples, strict=False):
        image = np.asarray(real.load(sample))
        found = find_retina(image)
        axis.imshow(image, cmap="gray", vmin=0, vmax=255, aspect="auto")
        axis.plot(found.ilm, color="cyan", linewidth=1)
        axis.plot(found.bruch, color="yellow", linewidth=1)
        axis.set_title(sample.path.name, fontsize=9)
    figure.savefig(path, dpi=60)
    plt.close(figure)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="make the documentation's figures")
    parser.add_argument("--sheets", type=Path, help="also draw every dev scan's retina here")
    args = parser.parse_args()
    synthetic_vs_real()
    everything = scan(REAL).split("all")
    retina_on_real(everything[::12], OUT / "retina_real_dev.png")
    if args.sheets:
        args.sheets.mkdir(parents=True, exist_ok=True)
        for page, start in enumerate(range(0, len(everything), 36)):
            sheet = everything[start : start + 36]
            retina_on_real(sheet, args.sheets / f"retina_dev_{page}.png", columns=6)
