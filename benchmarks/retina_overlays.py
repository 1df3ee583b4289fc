"""Burned-in overlays against the retina finder, on real dev scans: how much of a mark is taken
for retina, and how much the clean retina changes.

    .venv/bin/python benchmarks/retina_overlays.py [--every 7] [--jpeg 90]
        [--data ../shared/data/oct2017-real/dev]

For every ``--every``-th dev scan, each overlay kind (:data:`octlens.data.overlays.OVERLAY_KINDS`)
is drawn bright (230) and mid-gray (128), at a corner and at the middle of an edge (the corner
and edge rotating with the scan, the class code too), and the share of its ink inside the retina
mask is pooled per kind and level: drawn into the decoded pixels, and after a JPEG round trip at
``--jpeg`` quality (a real export compresses the mark with the scan). The baseline is the same
finder with overlay detection off, in the same process (the finder before issue 22). The clean
scans (all of them) are then compared: IoU of the retina mask with and without overlay detection,
and the finder's time per scan with and without it.

Only dev scans: the thresholds of :func:`octlens.data.retina.burned_in_overlays` were chosen on
them, and the holdout is for evaluation only.
"""

from __future__ import annotations

import argparse
import io
import time
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

import numpy as np
from PIL import Image

from octlens.data import retina as finder
from octlens.data.overlays import BRIGHT, OVERLAY_KINDS, PLACES, draw_overlay


@contextmanager
def without_overlay_detection():
    """The finder as it was: nothing is an overlay."""

    def nothing(pixels: np.ndarray, fill: np.ndarray | None = None) -> np.ndarray:
        return np.zeros(np.shape(pixels), dtype=bool)

    with mock.patch.object(finder, "_overlays", nothing):
        yield


def jpeg(pixels: np.ndarray, quality: int) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=quality)
    return np.asarray(Image.open(buffer))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/oct2017-real/dev"))
    parser.add_argument("--every", type=int, default=7)
    parser.add_argument("--jpeg", type=int, default=90)
    args = parser.parse_args()
    paths = sorted(p for p in args.data.rglob("*") if p.suffix.lower() in {".jpeg", ".png"})
    scans = [np.asarray(Image.open(path).convert("L")) for path in paths]

    inside: dict[tuple[str, int, str, str], list[int]] = {}
    for j, base in enumerate(scans[:: args.every]):
        for k, kind in enumerate(OVERLAY_KINDS):
            for level in (BRIGHT, 128):
                for where, place in (
                    ("corner", PLACES[(j + k) % 4]),
                    ("edge", PLACES[4 + (j + k) % 4]),
                ):
                    marked = base.copy()
                    ink = draw_overlay(marked, kind, (j + k) % 4, place, level)
                    for variant, pixels in (
                        ("drawn", marked),
                        (f"jpeg{args.jpeg}", jpeg(marked, args.jpeg)),
                    ):
                        found = finder.find_retina(pixels).mask()
                        counts = inside.setdefault((kind, level, where, variant), [0, 0])
                        counts[0] += int((found & ink).sum())
                        counts[1] += int(ink.sum())
                    with without_overlay_detection():
                        found = finder.find_retina(marked).mask()
                    counts = inside.setdefault((kind, level, where, "drawn, before"), [0, 0])
                    counts[0] += int((found & ink).sum())
                    counts[1] += int(ink.sum())

    n_marked = len(scans[:: args.every])
    print(f"Share of overlay ink inside the retina mask ({n_marked} real dev scans per cell)\n")
    variants = ["drawn, before", "drawn", f"jpeg{args.jpeg}"]
    print("| kind | level | place | " + " | ".join(variants) + " |")
    print("| --- | --- | --- | " + " | ".join("---" for _ in variants) + " |")
    for kind in OVERLAY_KINDS:
        for level in (BRIGHT, 128):
            for where in ("corner", "edge"):
                cells = []
                for variant in variants:
                    got, total = inside[(kind, level, where, variant)]
                    cells.append(f"{got / total:.1%}")
                print(f"| {kind} | {level} | {where} | " + " | ".join(cells) + " |")
    print("\n| kind | " + " | ".join(variants) + " |   (pooled over levels and places)")
    for kind in OVERLAY_KINDS:
        cells = []
        for variant in variants:
            keys = [key for key in inside if key[0] == kind and key[3] == variant]
            got = sum(inside[key][0] for key in keys)
            total = sum(inside[key][1] for key in keys)
            cells.append(f"{got / total:.1%}")
        print(f"| {kind} | " + " | ".join(cells) + " |")

    ious, seconds, seconds_before = [], 0.0, 0.0
    for pixels in scans:
        start = time.perf_counter()
        now = finder.find_retina(pixels).mask()
        seconds += time.perf_counter() - start
        with without_overlay_detection():
            start = time.perf_counter()
            before = finder.find_retina(pixels).mask()
            seconds_before += time.perf_counter() - start
        ious.append((now & before).sum() / max(1, (now | before).sum()))
    values = np.array(ious)
    print(
        f"\nClean dev scans ({len(scans)}): IoU of the retina with and without overlay detection "
        f"mean {values.mean():.4f}, lowest {values.min():.4f}; {int((values == 1).sum())} "
        f"identical, {int((values < 0.99).sum())} below 0.99"
    )
    print(
        f"finder time per scan: {seconds / len(scans) * 1000:.0f} ms with overlay detection, "
        f"{seconds_before / len(scans) * 1000:.0f} ms without ({seconds / seconds_before:.2f}x)"
    )


if __name__ == "__main__":
    main()
