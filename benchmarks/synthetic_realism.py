"""How far octlens's synthetic OCT is from real OCT2017 scans, measured, not eyeballed.

    .venv/bin/python benchmarks/synthetic_realism.py [--real DEV] [--n-per-class 40]

Two measures, on the real ``dev`` scans (never ``holdout``) and as many synthetic scans:

- **separability** (lower is better): a small classifier (logistic regression, 5-fold stratified
  cross-validation) tells real from synthetic, once from a 32x32 thumbnail of the whole scan
  squashed as the models see it, once from the statistics below. ROC AUC 0.5 means the two
  cannot be told apart by it; 1.0 that every scan gives itself away.
- **statistics side by side** (median and interquartile range per source): the retina's
  thickness and position as fractions of the height (found by :func:`find_retina` on both, so the
  same estimator measures both), brightness of the vitreous above the ILM and of the 60 px below
  Bruch's membrane, speckle (the spread of the retina's pixels around a 2-px blur), the scanner
  fill's share, the tilt of Bruch's membrane, and the global mean.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from octlens.data.images import is_image_file, load_grayscale
from octlens.data.retina import find_retina
from octlens.data.synth import synthesize

REAL_DEV = Path(__file__).resolve().parents[2] / "shared" / "data" / "oct2017-real" / "dev"
STATISTICS = (
    "retina thickness / height",
    "retina centre / height",
    "vitreous mean",
    "below-Bruch mean",
    "speckle (retina)",
    "fill share",
    "tilt (deg)",
    "global mean",
)
THUMBNAIL = 32


def scan_statistics(pixels: np.ndarray) -> np.ndarray:
    """The :data:`STATISTICS` of one grayscale scan (uint8, H x W)."""
    height, width = pixels.shape
    boundaries = find_retina(pixels)
    ilm, bruch = boundaries.ilm, boundaries.bruch
    rows = np.arange(height)[:, None]
    values = pixels.astype(np.float32) / 255
    open_ = ~boundaries.fill
    vitreous = (rows < ilm[None, :] - 8) & open_
    below = (rows > bruch[None, :]) & (rows < bruch[None, :] + 60 * height / 496) & open_
    retina = boundaries.mask()
    detail = values - ndimage.gaussian_filter(values, 2.0)
    columns = np.arange(width)
    slope = np.polyfit(columns, bruch, 1)[0] if width > 1 else 0.0
    return np.array(
        [
            float(np.median(bruch - ilm)) / height,
            float(np.median((bruch + ilm) / 2)) / height,
            _mean(values, vitreous),
            _mean(values, below),
            float(detail[retina].std()) if retina.any() else 0.0,
            float(boundaries.fill.mean()),
            float(np.degrees(np.arctan(slope))),
            float(values.mean()),
        ]
    )


def _mean(values: np.ndarray, where: np.ndarray) -> float:
    return float(values[where].mean()) if where.any() else float("nan")


def thumbnail(image: Image.Image) -> np.ndarray:
    return np.asarray(image.resize((THUMBNAIL, THUMBNAIL), Image.Resampling.BILINEAR)).ravel()


def describe(paths: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    """Statistics (n, len(STATISTICS)) and thumbnails (n, THUMBNAIL**2) of the scans."""
    stats, thumbs = [], []
    for path in paths:
        image = load_grayscale(path)
        stats.append(scan_statistics(np.asarray(image)))
        thumbs.append(thumbnail(image))
    return np.nan_to_num(np.array(stats), nan=0.0), np.array(thumbs, dtype=np.float32) / 255


def separability(real: np.ndarray, synthetic: np.ndarray, seed: int = 0) -> float:
    """Cross-validated ROC AUC of a logistic regression telling real (1) from synthetic (0)."""
    features = np.concatenate([real, synthetic])
    truth = np.r_[np.ones(len(real)), np.zeros(len(synthetic))]
    model = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))
    folds = StratifiedKFold(5, shuffle=True, random_state=seed)
    scores = cross_val_predict(model, features, truth, cv=folds, method="predict_proba")[:, 1]
    return float(roc_auc_score(truth, scores))


def images_under(root: Path) -> list[Path]:
    return sorted(
        path
        for path in root.rglob("*")
        if is_image_file(path) and not {"masks", "retina"} & set(path.relative_to(root).parts)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real", type=Path, default=REAL_DEV)
    parser.add_argument("--synthetic", type=Path, help="a synthetic dataset (default: make one)")
    parser.add_argument("--n-per-class", type=int, default=40)
    args = parser.parse_args()
    if "holdout" in args.real.parts:
        parser.error("holdout scans are for evaluation only; measure realism on dev")
    with tempfile.TemporaryDirectory() as scratch:
        synthetic_root = args.synthetic
        if synthetic_root is None:
            synthetic_root = Path(scratch) / "synth"
            synthesize(synthetic_root, args.n_per_class, seed=0)
        real_stats, real_thumbs = describe(images_under(args.real))
        synth_stats, synth_thumbs = describe(images_under(synthetic_root))
    print(f"real: {len(real_stats)} scans from {args.real}; synthetic: {len(synth_stats)}")
    print("| separability (ROC AUC, 0.5 = indistinguishable) | real vs synthetic |")
    print("| --- | --- |")
    print(f"| thumbnail {THUMBNAIL}x{THUMBNAIL} | {separability(real_thumbs, synth_thumbs):.3f} |")
    print(f"| statistics | {separability(real_stats, synth_stats):.3f} |")
    print()
    print("| statistic | real: median [IQR] | synthetic: median [IQR] |")
    print("| --- | --- | --- |")
    for k, name in enumerate(STATISTICS):
        cells = []
        for values in (real_stats[:, k], synth_stats[:, k]):
            low, mid, high = np.percentile(values, [25, 50, 75])
            cells.append(f"{mid:.3f} [{low:.3f}, {high:.3f}]")
        print(f"| {name} | {cells[0]} | {cells[1]} |")


if __name__ == "__main__":
    main()
