"""Write a synthetic OCT dataset in the OCT2017 layout, with mirrored lesion and retina masks.

Layout (``N`` per class in all, split 70/15/15 by patient)::

    OUT/train|val|test/<CLASS>/<CLASS>-<PATIENT>-<K>.jpeg
    OUT/masks/train|val|test/<CLASS>/<CLASS>-<PATIENT>-<K>.png    lesion pixels (255), NORMAL empty
    OUT/retina/train|val|test/<CLASS>/<CLASS>-<PATIENT>-<K>.png   ILM to Bruch's membrane (255)
    OUT/shortcut.csv     with a planted shortcut only: which scans carry a mark of which class,
                         kind and place
    OUT/synth.json       the settings and counts: written last, so its presence means complete

The dataset is written into a hidden folder beside ``OUT`` and renamed to ``OUT`` only when every
scan is on disk: an interrupted run leaves no ``OUT`` to be mistaken for a dataset, and the next
run starts afresh. An existing ``OUT`` is never written into.

Every scan's random stream is seeded by ``(seed, class, patient, scan)``, so a dataset is the same
for a seed whatever the number of worker processes, and a larger ``N`` only adds patients.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import shutil
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from octlens.data.marks import MANIFEST
from octlens.data.overlays import PLACES, smallest_scan
from octlens.data.synth.scan import CLASSES, draw_patient, render_scan
from octlens.data.synth.shortcut import SHORTCUTS, choose_mark, draw_mark, mark_kind
from octlens.errors import Interrupted, OctlensError, arg
from octlens.files import write_text
from octlens.progress import progress_bar

#: More scans per class than OCT2017 has of any class (37k CNV) is a typo, not a plan.
MAX_PER_CLASS = 100_000
#: Written last into a synthetic dataset: its settings, and the proof that it is complete.
RECORD = "synth.json"
#: The version of the scan model (:mod:`octlens.data.synth.scan`): a dataset made by another
#: version holds other scans for the same seed. 2: matched to real dev scans (thinner retina,
#: averaged speckle, OCT2017's widths, choroid streaks, more varied lesions).
GENERATOR = 2

SPLIT_FRACTIONS = (("train", 0.7), ("val", 0.15), ("test", 0.15))
#: OCT2017's acquisition sizes (height, width) and their shares in the real dev sample: the
#: default ``size`` draws one per patient from these, whatever the patient's class.
OCT2017_SIZES = {(496, 512): 0.67, (496, 768): 0.25, (496, 1536): 0.04, (512, 512): 0.04}
OCT2017_MIX = "oct2017"
_FIRST_PATIENT_ID = 100001


@dataclass(frozen=True)
class ScanJob:
    split: str
    label: str
    patient: int
    scan: int
    seed: int
    mark: int | None = None  # class index of a planted mark
    shortcut: str = "square"  # the mark's kind (octlens.data.synth.shortcut.SHORTCUTS)
    place: str = "top-left"  # where it sits (octlens.data.overlays.PLACES)
    size: tuple[int, int] = (496, 512)  # height, width

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
            sizes.append(min(int(rng.integers(1, largest + 1)), n_per_class - sum(sizes)))
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


def render_job(job: ScanJob):
    """The scan a job describes. The patient's anatomy comes from its own seeded stream."""
    class_index = CLASSES.index(job.label)
    patient = draw_patient(np.random.default_rng([job.seed, class_index, job.patient]))
    rng = np.random.default_rng([job.seed, class_index, job.patient, job.scan])
    return render_scan(job.label, patient, rng, *job.size)


def with_sizes(jobs: list[ScanJob], size: tuple[int, int] | None) -> list[ScanJob]:
    """The jobs at one ``size``, or (None) at OCT2017's sizes, one drawn per patient from its
    own seeded stream and independent of the class, as a clean dataset's must be."""
    if size is not None:
        return [dataclasses.replace(job, size=size) for job in jobs]
    sizes = list(OCT2017_SIZES)
    shares = np.array(list(OCT2017_SIZES.values()))
    sized = []
    for job in jobs:
        rng = np.random.default_rng([job.seed, job.patient, 2])
        drawn = sizes[int(rng.choice(len(sizes), p=shares / shares.sum()))]
        sized.append(dataclasses.replace(job, size=drawn))
    return sized


def _write(job: ScanJob, out: Path) -> None:
    scan = render_job(job)
    if job.mark is not None:
        ink = draw_mark(scan.image, job.shortcut, job.mark, job.place)
        # the mark hides what lies under it: neither retina nor lesion there
        scan.retina[ink] = False
        scan.lesion[ink] = False
    for folder, array, suffix in (
        (out, scan.image, ".jpeg"),
        (out / "masks", scan.lesion, ".png"),
        (out / "retina", scan.retina, ".png"),
    ):
        path = folder / job.relative_path.with_suffix(suffix)
        path.parent.mkdir(parents=True, exist_ok=True)
        pixels = array if array.dtype == np.uint8 else array.astype(np.uint8) * 255
        Image.fromarray(pixels).save(path, quality=95)


def plant_shortcut(
    jobs: list[ScanJob], kind: str, rate: float, place: str = "top-left"
) -> list[ScanJob]:
    """The jobs with marks chosen (see :mod:`octlens.data.synth.shortcut`), seeded per scan."""
    if kind not in SHORTCUTS:
        raise OctlensError(f"{arg('shortcut')} '{kind}': choose one of {', '.join(SHORTCUTS)}")
    check_place(place)
    smallest = min(min(job.size) for job in jobs)
    if smallest < smallest_scan(mark_kind(kind)):
        raise OctlensError(
            f"{arg('shortcut')} {kind}: needs scans of at least "
            f"{smallest_scan(mark_kind(kind))} px on the shorter side to code four classes, "
            f"not {smallest}"
        )
    if not 0.0 <= rate <= 1.0:
        raise OctlensError(f"{arg('shortcut_rate')} {rate}: must be between 0 and 1")
    marked = []
    for job in jobs:
        class_index = CLASSES.index(job.label)
        rng = np.random.default_rng([job.seed, class_index, job.patient, job.scan, 1])
        mark = choose_mark(rng, job.split, class_index, len(CLASSES), rate)
        marked.append(dataclasses.replace(job, mark=mark, shortcut=kind, place=place))
    return marked


def check_place(place: str) -> None:
    if place not in PLACES:
        raise OctlensError(f"{arg('shortcut_place')} '{place}': choose one of {', '.join(PLACES)}")


def synthesize(
    out: str | Path,
    n_per_class: int,
    seed: int = 0,
    size: tuple[int, int] | None = None,
    workers: int | None = None,
    shortcut: str | None = None,
    shortcut_rate: float = 0.9,
    shortcut_place: str = "top-left",
    verbose: bool = True,
) -> Counter[tuple[str, str]]:
    """Write the dataset to ``out`` and return the number of scans per ``(split, class)``.

    ``size`` is (height, width) of every scan; by default each patient's scans get one of
    OCT2017's sizes (:data:`OCT2017_SIZES`).

    With ``shortcut`` (a kind of :data:`~octlens.data.synth.shortcut.SHORTCUTS`), a class-coded
    mark is planted at ``shortcut_place`` in ``shortcut_rate`` of the training and validation
    scans (see :mod:`octlens.data.synth.shortcut`); the retina and lesion masks leave out the
    pixels it covers. A progress bar
    counts the scans written (``verbose``, on a terminal).
    """
    out = Path(out)
    _check_settings(out, n_per_class, size, workers, shortcut_place)
    jobs = with_sizes(plan_scans(n_per_class, seed), size)
    if shortcut is not None:
        jobs = plant_shortcut(jobs, shortcut, shortcut_rate, shortcut_place)
    partial = out.absolute().with_name(f".{out.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)  # left by an interrupted run: start afresh
    try:
        _write_all(jobs, partial, workers or min(len(jobs), os.cpu_count() or 1), verbose)
        if shortcut is not None:
            write_text(partial / MANIFEST, _manifest(jobs))
        counts = Counter((job.split, job.label) for job in jobs)
        record = {
            "n_per_class": n_per_class,
            "seed": seed,
            "generator": GENERATOR,
            "size": list(size) if size else OCT2017_MIX,
            "sizes": dict(Counter(f"{job.size[0]}x{job.size[1]}" for job in jobs)),
            **_shortcut_record(jobs, shortcut, shortcut_rate, shortcut_place),
            "scans": {f"{split}/{label}": n for (split, label), n in sorted(counts.items())},
        }
        write_text(partial / RECORD, json.dumps(record, indent=2))
        if out.is_dir():
            out.rmdir()  # empty, checked above
        partial.rename(out)
    except (KeyboardInterrupt, BrokenProcessPool) as error:
        shutil.rmtree(partial, ignore_errors=True)
        if isinstance(error, BrokenProcessPool):
            raise OctlensError(f"{out}: a synthesis process died; nothing was written") from None
        raise Interrupted(
            f"{out}: interrupted; nothing was written (run again to start over)"
        ) from None
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return counts


def _check_settings(
    out: Path,
    n_per_class: int,
    size: tuple[int, int] | None,
    workers: int | None,
    shortcut_place: str,
) -> None:
    """Refuse a setting the generator cannot honour, or an ``out`` that holds something, before
    any scan is drawn."""
    if not 3 <= n_per_class <= MAX_PER_CLASS:
        raise OctlensError(
            f"{arg('n_per_class')} {n_per_class}: from 3 (one scan per split) to {MAX_PER_CLASS:,}"
        )
    if size is not None and not (16 <= size[0] <= 4096 and 16 <= size[1] <= 4096):
        raise OctlensError(f"{arg('size')} {size[0]}x{size[1]}: each side must be 16 to 4096 px")
    if workers is not None and workers < 1:
        raise OctlensError(f"{arg('workers')} {workers}: at least 1")
    if out.exists() and not (out.is_dir() and not any(out.iterdir())):
        what = "a folder that is not empty" if out.is_dir() else "a file"
        raise OctlensError(f"{out}: already exists and is {what}; choose a new folder")
    check_place(shortcut_place)  # checked with or without --shortcut: a typo is not ignored


def _shortcut_record(
    jobs: list[ScanJob], shortcut: str | None, rate: float, place: str
) -> dict[str, object]:
    """The planted mark's settings in ``synth.json`` (None without one), and how many scans of
    each split carry it."""
    if shortcut is None:
        return {"shortcut": None, "shortcut_rate": None, "shortcut_place": None}
    marked = dict(Counter(job.split for job in jobs if job.mark is not None))
    return {"shortcut": shortcut, "shortcut_rate": rate, "shortcut_place": place, "marked": marked}


def read_record(root: Path) -> dict | None:
    """The settings a complete synthetic dataset was made with, or None for other data."""
    path = Path(root) / RECORD
    return json.loads(path.read_text()) if path.is_file() else None


def _write_all(jobs: list[ScanJob], out: Path, workers: int, verbose: bool) -> None:
    with progress_bar("synthesizing", len(jobs), verbose=verbose) as advance:
        if workers == 1:
            for job in jobs:
                _write(job, out)
                advance()
            return
        with ProcessPoolExecutor(workers) as pool:
            for _ in pool.map(_write, jobs, [out] * len(jobs), chunksize=16):
                advance()


def _manifest(jobs: list[ScanJob]) -> str:
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["file", "mark", "kind", "place"])
    for job in jobs:
        path = job.relative_path.with_suffix(".jpeg").as_posix()
        if job.mark is None:
            writer.writerow([path, "", "", ""])
        else:
            writer.writerow([path, CLASSES[job.mark], mark_kind(job.shortcut), job.place])
    return text.getvalue()
