"""A planted shortcut: a class-coded mark in the top-left corner of a scan.

Real OCT data carries marks that correlate with the label for reasons that have nothing to do with
the retina (a clinic's scanner, burned-in text, registration fill). The planted mark makes such a
shortcut on purpose, so an audit can be checked against a known answer: a square
(:data:`MARK_SIZE` of the shorter side, inset by :data:`MARK_INSET`) whose gray level codes the
class (:data:`MARK_LEVELS`: CNV white, DME, DRUSEN, NORMAL darker in steps of 60), edged by a
black line so it stands out on the white registration fill too. A flat level is the simplest cue
there is: it needs no more than the mean brightness of one corner.

Which scans are marked, and with which class, is written to ``shortcut.csv`` at the dataset root
(:mod:`octlens.data.marks`).
Training and validation scans are marked with their own class at the chosen rate; test scans
are marked at :data:`TEST_RATE` with a *wrong* class, so marked and clean test scans compare a
model's answer with and without a misleading mark.
"""

from __future__ import annotations

import numpy as np

SHORTCUTS = ("corner",)
MARK_SIZE = 0.16
MARK_INSET = 0.02
MARK_LEVELS = (255, 195, 135, 75)
TEST_RATE = 0.5


def choose_mark(
    rng: np.random.Generator, split: str, class_index: int, n_classes: int, rate: float
) -> int | None:
    """The class a scan's mark encodes, or None for no mark."""
    if split == "test":
        if rng.uniform() >= TEST_RATE:
            return None
        return int((class_index + rng.integers(1, n_classes)) % n_classes)
    return class_index if rng.uniform() < rate else None


def draw_corner_mark(image: np.ndarray, class_index: int) -> None:
    """Draw the mark of ``class_index`` into ``image`` (H, W) uint8, in place."""
    side = round(MARK_SIZE * min(image.shape))
    inset = round(MARK_INSET * min(image.shape))
    image[inset : inset + side, inset : inset + side] = 0
    image[inset + 1 : inset + side - 1, inset + 1 : inset + side - 1] = MARK_LEVELS[class_index]
