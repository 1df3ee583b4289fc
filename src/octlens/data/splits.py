"""Patient-level splitting and leakage checks.

OCT2017 has many B-scans per patient (one patient has dozens), and scans of one eye are near
duplicates: a split by image puts the same retina on both sides and inflates validation scores.
Every split octlens makes is by patient, and :func:`find_leakage` reports any that is not.
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from octlens.data.index import DatasetIndex, Sample


def _group_key(sample: Sample) -> str:
    """Scans without a patient id (renamed files) form a group of their own."""
    return f"patient:{sample.patient}" if sample.patient else f"file:{sample.path}"


def split_by_patient(
    samples: Sequence[Sample], fraction: float, seed: int = 0
) -> tuple[list[Sample], list[Sample]]:
    """Carve about ``fraction`` of ``samples`` off, whole patients at a time.

    Patients are visited in a seeded random order and taken while their majority class still has
    room, so the carved part keeps roughly the class balance of the whole.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be between 0 and 1, got {fraction}")
    groups: dict[str, list[Sample]] = defaultdict(list)
    for sample in samples:
        groups[_group_key(sample)].append(sample)
    keys = sorted(groups)
    order = np.random.default_rng(seed).permutation(len(keys))

    class_sizes = Counter(sample.label for sample in samples)
    room = {label: max(1, round(fraction * size)) for label, size in class_sizes.items()}
    kept: list[Sample] = []
    carved: list[Sample] = []
    for position in order:
        group = groups[keys[position]]
        majority = Counter(sample.label for sample in group).most_common(1)[0][0]
        if room[majority] > 0 and len(carved) + len(group) < len(samples):
            carved.extend(group)
            room[majority] -= sum(sample.label == majority for sample in group)
        else:
            kept.extend(group)
    return kept, carved


@dataclass(frozen=True)
class Leak:
    """One patient, or one identical image, found in more than one split."""

    kind: str  # "patient" or "duplicate"
    key: str
    splits: tuple[str, ...]


def find_leakage(index: DatasetIndex, hashes: bool = False) -> list[Leak]:
    """Patients present in several splits, and, with ``hashes=True``, byte-identical files."""
    leaks = []
    by_patient: dict[str, set[str]] = defaultdict(set)
    for split, samples in index.splits.items():
        for sample in samples:
            if sample.patient:
                by_patient[sample.patient].add(split)
    leaks += [
        Leak("patient", patient, tuple(sorted(splits)))
        for patient, splits in sorted(by_patient.items())
        if len(splits) > 1
    ]
    if hashes:
        by_digest: dict[str, set[str]] = defaultdict(set)
        for split, samples in index.splits.items():
            for sample in samples:
                if sample.index is None:
                    by_digest[hashlib.sha256(sample.path.read_bytes()).hexdigest()].add(split)
        leaks += [
            Leak("duplicate", digest[:16], tuple(sorted(splits)))
            for digest, splits in sorted(by_digest.items())
            if len(splits) > 1
        ]
    return leaks
