"""Make the README's figures: synthetic vs real scans per class (run from the repository root).

.venv/bin/python docs/make_figures.py
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from octlens.data.index import scan
from octlens.data.synth import CLASSES, plan_scans, render_job

REAL = Path("../shared/data/oct2017-real/dev")
OUT = Path("docs/images")


def synthetic_vs_real(seed: int = 3) -> None:
    """One synthetic (with its lesion outline) and one real dev scan per class."""
    real = scan(REAL)
    jobs = plan_scans(8, seed)
    figure, axes = plt.subplots(2, 4, figsize=(16, 8), constrained_layout=True)
    for column, label in enumerate(CLASSES):
        job = next(j for j in jobs if j.label == label and j.split == "train")
        synthetic = render_job(job)
        axes[0, column].imshow(synthetic.image, cmap="gray", vmin=0, vmax=255)
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


if __name__ == "__main__":
    synthetic_vs_real()
