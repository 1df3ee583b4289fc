"""A planted shortcut: a class-coded burned-in mark on a scan.

Real OCT data carries marks that correlate with the label for reasons that have nothing to do with
the retina (a clinic's scanner, burned-in text, logos, scale bars, registration fill). The planted
mark makes such a shortcut on purpose, so an audit can be checked against a known answer. Its
*kind* (:data:`SHORTCUTS`, drawn by :func:`octlens.data.overlays.draw_overlay`) is how it codes the
class: the flat ``square`` by its gray level (the simplest cue there is: the mean brightness of
one corner), the others by their shape in one gray level (text, stripes, a checkerboard, a logo,
a scale bar, an arrow). Its *place* is a corner or the middle of an edge
(:data:`octlens.data.overlays.PLACES`). ``corner`` is the name the square had before marks had
kinds, kept so that older commands and records still read.

Which scans are marked, and with which class, kind and place, is written to ``shortcut.csv`` at
the dataset root (:mod:`octlens.data.marks`). Training and validation scans are marked with their
own class at the chosen rate; test scans are marked at :data:`TEST_RATE` with a *wrong* class, so
marked and clean test scans compare a model's answer with and without a misleading mark.
"""

from __future__ import annotations

import numpy as np

from octlens.data.overlays import OVERLAY_KINDS, draw_overlay

#: The kinds of mark ``octlens synth --shortcut`` plants; ``corner`` is the square's old name.
SHORTCUTS = (*OVERLAY_KINDS, "corner")
TEST_RATE = 0.5


def mark_kind(shortcut: str) -> str:
    """The overlay kind a ``--shortcut`` name draws."""
    return "square" if shortcut == "corner" else shortcut


def choose_mark(
    rng: np.random.Generator, split: str, class_index: int, n_classes: int, rate: float
) -> int | None:
    """The class a scan's mark encodes, or None for no mark."""
    if split == "test":
        if rng.uniform() >= TEST_RATE:
            return None
        return int((class_index + rng.integers(1, n_classes)) % n_classes)
    return class_index if rng.uniform() < rate else None


def draw_mark(image: np.ndarray, shortcut: str, class_index: int, place: str) -> np.ndarray:
    """Draw the mark of ``class_index`` into ``image`` (H, W) uint8, in place; returns its ink."""
    return draw_overlay(image, mark_kind(shortcut), class_index, place)
