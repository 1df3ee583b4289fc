"""Planted marks: which scans of a dataset carry a mark, and of which class.

A dataset with a planted shortcut (``octlens synth --shortcut``, or a user's own experiment)
lists its marked scans in ``ROOT/shortcut.csv``: one row per scan, ``file`` relative to the root
and ``mark``, the class the mark encodes (empty for an unmarked scan). The audit reads it to
compare accuracy on clean and marked scans; it needs nothing of how the marks were drawn.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence

from octlens.data.index import DatasetIndex, Sample

MANIFEST = "shortcut.csv"


def read_marks(index: DatasetIndex, samples: Sequence[Sample]) -> list[str | None] | None:
    """The class of each sample's mark (None: unmarked), or None if the data has no manifest."""
    manifest = index.root / MANIFEST
    if not manifest.is_file():
        return None
    with open(manifest, newline="") as handle:
        marks = {row["file"]: row["mark"] or None for row in csv.DictReader(handle)}
    return [marks.get(s.path.relative_to(index.root).as_posix()) for s in samples]
