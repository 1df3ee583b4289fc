"""Patient-level splitting and leakage checks.

OCT2017 has many B-scans per patient (one patient has dozens), and scans of one eye are near
duplicates: a split by image puts the same retina on both sides and inflates validation scores.
Every split octlens makes is by patient, and :func:`find_leakage` reports any that is not.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from octlens.data.index import SINGLE_SPLIT, DatasetIndex, DataWarning, Sample
from octlens.errors import OctlensError
from octlens.files import read_json, write_text
from octlens.progress import counted, progress_bar

#: Where a training run records the splits it carved (val, test) from its training split.
CARVED_RECORD = "splits.json"


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
    files: tuple[str, ...] = ()  # duplicates: the identical files, relative to the dataset root


def has_patients(index: DatasetIndex) -> bool:
    """Whether any scan of ``index`` has a patient id."""
    return any(sample.patient for samples in index.splits.values() for sample in samples)


def warn_without_patients(index: DatasetIndex) -> None:
    """One warning when no scan of a dataset folder has a patient id: its splits, leakage checks
    and confound folds then go scan by scan, and one eye's near-duplicate B-scans can sit on
    both sides (a MedMNIST file has no ids to give, and is left alone)."""
    if index.arrays or has_patients(index):
        return
    warnings.warn(
        f"{index.root}: no scan has a patient id, so scans are split and checked for leakage "
        "one by one, not by patient (give ids with --patients CSV or --patient-pattern REGEX; "
        "OCT2017's CLASS-PATIENT-N names have them)",
        DataWarning,
        stacklevel=3,
    )


def find_leakage(index: DatasetIndex, hashes: bool = False, verbose: bool = True) -> list[Leak]:
    """Patients present in several splits, and, with ``hashes=True``, byte-identical files (a
    progress bar counts the files hashed); a dataset folder without patient ids is said in one
    warning."""
    warn_without_patients(index)
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
        stored = [
            (split, sample)
            for split, samples in index.splits.items()
            for sample in samples
            if sample.index is None
        ]
        by_digest: dict[str, list[tuple[str, Sample]]] = defaultdict(list)
        with progress_bar("hashing files", len(stored), "files", verbose) as advance:
            for split, sample in counted(stored, advance):
                digest = hashlib.sha256(sample.path.read_bytes()).hexdigest()
                by_digest[digest].append((split, sample))
        for digest, copies in sorted(by_digest.items()):
            splits = tuple(sorted({split for split, _ in copies}))
            if len(splits) > 1:
                files = tuple(_relative(sample, index) for _, sample in copies)
                leaks.append(Leak("duplicate", digest[:16], splits, files))
    return leaks


def write_carved(run_dir: Path, index: DatasetIndex, carved: dict[str, list[Sample]]) -> None:
    """Record which scans a run carved into which split, so evaluation can find them again."""
    record = {
        "data": str(index.root),
        "splits": {
            name: [_relative(s, index) for s in samples] for name, samples in carved.items()
        },
    }
    write_text(Path(run_dir) / CARVED_RECORD, json.dumps(record, indent=2))


def split_samples(index: DatasetIndex, split: str, run_dir: Path | None = None) -> list[Sample]:
    """The samples of ``split``: the data's own split, or one the run carved (``splits.json``)."""
    record_path = Path(run_dir) / CARVED_RECORD if run_dir is not None else None
    if split in index.splits or record_path is None or not record_path.is_file():
        return index.split(split)
    carved = read_json(record_path).get("splits", {})
    if split not in carved:
        return index.split(split)
    by_name = {_relative(s, index): s for samples in index.splits.values() for s in samples}
    missing = [name for name in carved[split] if name not in by_name]
    if missing:
        raise OctlensError(
            f"{index.root}: {len(missing)} scan(s) the run carved into '{split}' are not in this "
            f"data (e.g. {missing[0]}); is it the data the run was trained on?"
        )
    if not carved[split]:
        raise OctlensError(f"{record_path}: the run carved no scans into '{split}'")
    return [by_name[name] for name in carved[split]]


def _relative(sample: Sample, index: DatasetIndex) -> str:
    return sample.path.relative_to(index.root).as_posix()


@dataclass(frozen=True)
class TrainingSplits:
    """The scans a run trains and validates on, and those it carved by patient from the
    training split (recorded with :func:`write_carved` so that evaluation finds them again)."""

    train_split: str
    train: list[Sample]
    val: list[Sample]
    carved: dict[str, list[Sample]]


def training_splits(
    index: DatasetIndex,
    train_split: str,
    val_split: str,
    val_fraction: float,
    test_fraction: float,
    seed: int,
) -> TrainingSplits:
    """The training and validation scans of ``index``, carving what the data lacks.

    A dataset of one split (an ImageFolder, ``all``) trains on it. Validation is ``val_split``,
    or a carve of ``val_fraction`` of the training split when there is none; with
    ``test_fraction``, a test split is carved first when the data has none. Patients shared
    between the training split and another are warned about (their scores are optimistic).
    """
    if train_split not in index.splits and list(index.splits) == [SINGLE_SPLIT]:
        train_split = SINGLE_SPLIT
    train = index.split(train_split)
    missing = index.missing_classes(train)
    if missing:
        raise OctlensError(
            f"{index.root}: the training split '{train_split}' has no images of "
            f"{', '.join(missing)}; a model cannot learn a class it never sees"
        )
    carved: dict[str, list[Sample]] = {}
    if test_fraction > 0 and "test" not in index.splits:
        train, carved["test"] = split_by_patient(train, test_fraction, seed=seed + 1)
    if val_split in index.splits and val_split != train_split:
        val = index.split(val_split)
    else:
        train, val = split_by_patient(train, val_fraction, seed=seed)
        carved["val"] = val
    for name, samples in (("training", train), ("validation", val)):
        if not samples:
            raise OctlensError(f"{index.root}: no readable {name} images")
    missing = index.missing_classes(train)
    if missing:
        raise OctlensError(
            f"{index.root}: carving {' and '.join(carved)} by patient left no training images of "
            f"{', '.join(missing)} (too few patients); give more scans or a '{val_split}' split"
        )
    _warn_training_leakage(index, train_split)
    return TrainingSplits(train_split, train, val, carved)


def _warn_training_leakage(index: DatasetIndex, train_split: str) -> None:
    """Warn when other splits share patients with the training split."""
    leaks = [leak for leak in find_leakage(index) if train_split in leak.splits]
    if not leaks:
        return
    shown = "; ".join(f"{leak.key} in {', '.join(leak.splits)}" for leak in leaks[:3])
    more = f" and {len(leaks) - 3} more" if len(leaks) > 3 else ""
    warnings.warn(
        f"{index.root}: {len(leaks)} patient(s) have scans in '{train_split}' and another split "
        f"({shown}{more}): scores on those splits will be optimistic (see 'octlens inspect')",
        DataWarning,
        stacklevel=3,
    )
