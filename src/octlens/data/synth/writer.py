"""Write a synthetic OCT dataset in the OCT2017 layout, with mirrored lesion and retina masks.

Layout (``N`` per class in all, split 70/15/15 by patient)::

    OUT/train|val|test/<CLASS>/<CLASS>-<PATIENT>-<K>.jpeg
    OUT/masks/train|val|test/<CLASS>/<CLASS>-<PATIENT>-<K>.png    lesion pixels (255), NORMAL empty
    OUT/retina/train|val|test/<CLASS>/<CLASS>-<PATIENT>-<K>.png   ILM to Bruch's membrane (255)
    OUT/shortcut.csv     with a planted shortcut only: which scans carry a mark of which class

Every scan's random stream is seeded by ``(seed, class, patient, scan)``, so a dataset is the same
for a seed whatever the number of worker processes, and a larger ``N`` only adds patients.
"""

from __future__ import annotations

import csv
import dataclasses
import os
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from octlens.data.synth.scan import CLASSES, draw_patient, render_scan
from octlens.data.synth.shortcut import MANIFEST, SHORTCUTS, choose_mark, draw_corner_mark

SPLIT_FRACTIONS = (("train", 0.7), ("val", 0.15), ("test", 0.15))
_FIRST_PATIENT_ID = 100001


@dataclass(frozen=True)
class ScanJob:
    split: str
    label: str
    patient: int
    scan: int
    seed: int
    mark: int | None = None  # class index of a planted corner mark

    @property
    def relative_path(self) -> Path:
        return Path(self.split) / self.label / f"{self.label}-{self.patient}-{self.scan}"


def plan_scans(n_per_class: int, seed: int) -> list[ScanJob]:
    """Patients of 1 to 4 scans each, per class, assigned to splits whole.

    Test and val take patients from the end of each class's list until they hold their share
    (at least one patient each); train takes the rest.
    """
    jobs = []
    patient = _FIRST_PATIENT_ID
    largest = max(1, min(4, n_per_class // 4))  # small sets still get a patient per split
    for class_index, label in enumerate(CLASSES):
        rng = np.random.default_rng([seed, class_index])
        sizes: list[int] = []
        while sum(sizes) < n_per_class:
            sizes.append(int(min(rng.integers(1, largest + 1), n_per_class - sum(sizes))))
        splits = ["train"] * len(sizes)
        position = len(sizes) - 1
        for split, fraction in SPLIT_FRACTIONS[:0:-1]:  # test, then val
            taken = 0
            while taken < max(1, round(fraction * n_per_class)) and position > 0:
                splits[position] = split
                taken += sizes[position]
                position -= 1
        for size, split in zip(sizes, splits, strict=True):
            jobs += [ScanJob(split, label, patient, k + 1, seed) for k in range(size)]
            patient += 1
    return jobs


def render_job(job: ScanJob, height: int = 496, width: int = 512):
    """The scan a job describes. The patient's anatomy comes from its own seeded stream."""
    class_index = CLASSES.index(job.label)
    patient = draw_patient(np.random.default_rng([job.seed, class_index, job.patient]))
    rng = np.random.default_rng([job.seed, class_index, job.patient, job.scan])
    return render_scan(job.label, patient, rng, height, width)


def _write(job: ScanJob, out: Path, height: int, width: int) -> None:
    scan = render_job(job, height, width)
    if job.mark is not None:
        draw_corner_mark(scan.image, job.mark)
    for folder, array, suffix in (
        (out, scan.image, ".jpeg"),
        (out / "masks", scan.lesion, ".png"),
        (out / "retina", scan.retina, ".png"),
    ):
        path = folder / job.relative_path.with_suffix(suffix)
        path.parent.mkdir(parents=True, exist_ok=True)
        pixels = array if array.dtype == np.uint8 else array.astype(np.uint8) * 255
        Image.fromarray(pixels).save(path, quality=95)


def plant_shortcut(jobs: list[ScanJob], kind: str, rate: float) -> list[ScanJob]:
    """The jobs with marks chosen (see :mod:`octlens.data.synth.shortcut`), seeded per scan."""
    if kind not in SHORTCUTS:
        raise ValueError(f"unknown shortcut {kind!r}; expected one of {SHORTCUTS}")
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"shortcut rate must be between 0 and 1, got {rate}")
    marked = []
    for job in jobs:
        class_index = CLASSES.index(job.label)
        rng = np.random.default_rng([job.seed, class_index, job.patient, job.scan, 1])
        mark = choose_mark(rng, job.split, class_index, len(CLASSES), rate)
        marked.append(dataclasses.replace(job, mark=mark))
    return marked


def synthesize(
    out: str | Path,
    n_per_class: int,
    seed: int = 0,
    size: tuple[int, int] = (496, 512),
    workers: int | None = None,
    shortcut: str | None = None,
    shortcut_rate: float = 0.9,
) -> Counter[tuple[str, str]]:
    """Write the dataset to ``out`` and return the number of scans per ``(split, class)``.

    With ``shortcut="corner"``, a class-coded corner mark is planted in ``shortcut_rate`` of the
    training and validation scans (see :mod:`octlens.data.synth.shortcut`).
    """
    if n_per_class < 3:
        raise ValueError("n_per_class must be at least 3 (one scan per split)")
    out = Path(out)
    jobs = plan_scans(n_per_class, seed)
    if shortcut is not None:
        jobs = plant_shortcut(jobs, shortcut, shortcut_rate)
    height, width = size
    workers = workers or min(len(jobs), os.cpu_count() or 1)
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            list(
                pool.map(
                    _write,
                    jobs,
                    [out] * len(jobs),
                    [height] * len(jobs),
                    [width] * len(jobs),
                    chunksize=16,
                )
            )
    else:
        for job in jobs:
            _write(job, out, height, width)
    if shortcut is not None:
        with open(out / MANIFEST, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["file", "mark"])
            for job in jobs:
                mark = "" if job.mark is None else CLASSES[job.mark]
                writer.writerow([job.relative_path.with_suffix(".jpeg").as_posix(), mark])
    return Counter((job.split, job.label) for job in jobs)
