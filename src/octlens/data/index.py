"""Finding the images of a dataset on disk: splits, classes, patients, and unreadable files.

Two layouts are read, both as ImageFolder-style class folders:

* ``ROOT/<split>/<CLASS>/<image>``: the OCT2017 layout (split names are whatever folders exist:
  ``train/val/test``, or ``dev/holdout``);
* ``ROOT/<CLASS>/<image>``: a single split, named ``all``.

MedMNIST ``.npz`` files (``train_images``, ``train_labels``, ...) are read into the same index.
Top-level ``masks/`` and ``retina/`` folders mirror the images with per-pixel masks (the synthetic
data writes them) and are never taken for splits.
"""

from __future__ import annotations

import hashlib
import itertools
import re
import warnings
import zipfile
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TypeVar

import numpy as np
from PIL import Image

from octlens.data.images import (
    UnreadableImageError,
    check_image,
    is_image_file,
    load_grayscale,
    pixel_scale,
    scaled_to_uint8,
)
from octlens.data.patients import PatientSource
from octlens.errors import OctlensError
from octlens.progress import counted, progress_bar

MASK_FOLDERS = ("masks", "retina")
SINGLE_SPLIT = "all"
T = TypeVar("T")
OCT2017_CLASSES = ("CNV", "DME", "DRUSEN", "NORMAL")
# MedMNIST sets have at most 11 classes; a label in the millions is a corrupt file, not a class.
MAX_CLASSES = 10_000

# Kermany et al. name files CLASS-PATIENT-N: the patient id is the middle field.
_KERMANY_NAME = re.compile(r"^[A-Za-z]+-(?P<patient>\d+)-\d+$")


class DataWarning(UserWarning):
    """Something in the data was skipped; training goes on without it."""


@dataclass(frozen=True)
class Sample:
    """One labelled image. ``index`` addresses a row of an in-memory array (MedMNIST)."""

    path: Path
    label: int
    patient: str = ""
    index: int | None = None


def patient_id(path: Path) -> str:
    """Patient id from an OCT2017 file name (``CNV-103044-7.jpeg`` -> ``103044``), else ``""``."""
    match = _KERMANY_NAME.match(path.stem)
    return match["patient"] if match else ""


@dataclass
class DatasetIndex:
    """The labelled images of a dataset, by split. Build it with :func:`scan`."""

    root: Path
    classes: list[str]
    splits: dict[str, list[Sample]]
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    arrays: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    #: Per MedMNIST split, the factor that maps its pixel values to 0..255.
    scales: dict[str, float] = field(default_factory=dict, repr=False)
    _fingerprints: dict[tuple[Sample, ...], str] = field(default_factory=dict, repr=False)

    def split(self, name: str) -> list[Sample]:
        if name not in self.splits:
            raise OctlensError(
                f"{self.root}: no split named '{name}' (found: {', '.join(sorted(self.splits))})"
            )
        return self.splits[name]

    def load(self, sample: Sample, target_size: int | None = None) -> Image.Image:
        """The sample's pixels as an 8-bit grayscale image."""
        if sample.index is not None:
            split = sample.path.parent.name
            pixels = self.arrays[split][sample.index]
            if pixels.ndim == 3:  # colour MedMNIST sets: average the channels
                pixels = pixels.mean(axis=-1)
            return Image.fromarray(scaled_to_uint8(pixels, self.scales[split]))
        return load_grayscale(sample.path, target_size)

    def fingerprint(self, samples: Iterable[Sample]) -> str:
        """A short digest of ``samples``, so a result can later be matched to the data it was
        computed on: file names, classes, sizes and the first and last 4 KiB of each file (a
        rewritten scan changes its header or its end; reading all of it would cost minutes on
        the full OCT2017), or the pixels of .npz images. Computed once per set of samples."""
        key = tuple(samples)
        if key not in self._fingerprints:
            self._fingerprints[key] = self._digest(key)
        return self._fingerprints[key]

    def _digest(self, samples: tuple[Sample, ...]) -> str:
        digest = hashlib.sha256()
        for sample in samples:
            if sample.index is None:
                name = sample.path.relative_to(self.root).as_posix()
                digest.update(f"{name}\0{sample.path.stat().st_size}\0".encode())
                digest.update(_ends(sample.path))
            else:
                split = sample.path.parent.name
                digest.update(np.ascontiguousarray(self.arrays[split][sample.index]).data)
            digest.update(f"\0{self.classes[sample.label]}\n".encode())
        return digest.hexdigest()[:16]

    def missing_classes(self, samples: Iterable[Sample]) -> list[str]:
        """The classes that none of ``samples`` belongs to."""
        present = {sample.label for sample in samples}
        return [name for label, name in enumerate(self.classes) if label not in present]

    def relabelled(self, classes: list[str]) -> DatasetIndex:
        """This index labelled by ``classes``, a model's class list that holds all of this
        data's classes: data with only some of them (the Duke fluid scans are all DME) is
        scored by the model's class numbers, its absent classes simply without scans."""
        if self.classes == classes:
            return self
        label = [classes.index(name) for name in self.classes]
        splits = {
            split: [replace(sample, label=label[sample.label]) for sample in samples]
            for split, samples in self.splits.items()
        }
        return replace(self, classes=list(classes), splits=splits)

    def mask_path(self, sample: Sample, kind: str = "masks") -> Path | None:
        """The mirrored mask of ``sample`` under ``ROOT/<kind>/``, if the dataset has one."""
        if sample.index is not None:
            return None
        relative = sample.path.relative_to(self.root).with_suffix(".png")
        candidate = self.root / kind / relative
        return candidate if candidate.is_file() else None


def scan(
    root: str | Path,
    strict: bool = False,
    patients: PatientSource | None = None,
    verbose: bool = True,
    empty_classes: bool = False,
) -> DatasetIndex:
    """Index a dataset folder or MedMNIST ``.npz`` file.

    Unreadable files are skipped with one :class:`DataWarning` that counts them and names the
    first few; with ``strict=True`` the first one is an error instead. Patient ids come from
    ``patients`` (a manifest or a name pattern, :mod:`octlens.data.patients`) when given, else
    from OCT2017's ``CLASS-PATIENT-N`` file names. A progress bar counts the files checked
    (``verbose``, on a terminal). A class folder without readable images is an error, since
    nothing could learn that class from it, unless ``empty_classes`` (data to score a trained
    model on may hold only some of its classes).
    """
    root = Path(root)
    if root.suffix == ".npz":
        if patients:
            raise OctlensError(f"{root}: {patients} needs a dataset folder, not a .npz file")
        return _scan_npz(root)
    if not root.is_dir():
        raise OctlensError(f"{root}: no such dataset folder")
    folders = _subfolders(root, skip=MASK_FOLDERS)
    if not folders:
        raise OctlensError(f"{root}: no class or split folders inside")
    if any(is_image_file(path) for folder in folders for path in _entries(folder)):
        split_folders = {SINGLE_SPLIT: root}
    else:
        split_folders = {folder.name: folder for folder in folders}

    class_folders: dict[str, dict[str, Path]] = {}
    for split, split_root in split_folders.items():
        found = _subfolders(split_root, skip=MASK_FOLDERS if split_root == root else ())
        if not found:
            raise OctlensError(f"{split_root}: split folder has no class folders")
        class_folders[split] = {folder.name: folder for folder in found}
    classes = _consistent_classes(root, class_folders)

    listed = {
        split: {name: _images(folder, empty_classes) for name, folder in sorted(by_class.items())}
        for split, by_class in class_folders.items()
    }
    splits, skipped = _readable_samples(root, listed, classes, strict, verbose, empty_classes)
    warn_skipped(skipped)
    if patients:
        splits = _with_patients(root, splits, patients)
    return DatasetIndex(root=root, classes=classes, splits=splits, skipped=skipped)


def _readable_samples(
    root: Path,
    listed: dict[str, dict[str, list[Path]]],
    classes: list[str],
    strict: bool,
    verbose: bool,
    empty_classes: bool,
) -> tuple[dict[str, list[Sample]], list[tuple[Path, str]]]:
    """The readable files of each split as samples, and the unreadable ones with their reason;
    a progress bar counts the files (checking 84,000 takes minutes)."""
    total = sum(len(files) for by_class in listed.values() for files in by_class.values())
    splits: dict[str, list[Sample]] = {}
    skipped: list[tuple[Path, str]] = []
    with progress_bar(f"indexing {root.name}", total, "files", verbose) as advance:
        for split, by_class in listed.items():
            samples = []
            for name, files in by_class.items():
                readable, unreadable = split_readable(counted(files, advance), strict)
                skipped += unreadable
                if files and not readable and not empty_classes:
                    raise OctlensError(f"{files[0].parent}: class folder has no readable images")
                label = classes.index(name)
                samples += [Sample(path, label, patient_id(path)) for path in readable]
            splits[split] = samples
    return splits, skipped


def _images(folder: Path, empty_classes: bool = False) -> list[Path]:
    """The image files of a class folder, sorted; none is a one-line error unless
    ``empty_classes``."""
    files = sorted(path for path in _entries(folder) if is_image_file(path))
    if not files and not empty_classes:
        raise OctlensError(f"{folder}: class folder has no images")
    return files


def _with_patients(
    root: Path, splits: dict[str, list[Sample]], patients: PatientSource
) -> dict[str, list[Sample]]:
    """``splits`` with the patient ids ``patients`` gives; one warning counts the scans it gives
    none (each then is a patient of its own)."""
    samples = [sample for split in splits.values() for sample in split]
    found = patients.assign(root, [sample.path for sample in samples])
    missing = [sample.path for sample in samples if sample.path not in found]
    if missing:
        warnings.warn(
            f"{root}: {len(missing)} of {len(samples)} scan(s) have no patient id in {patients} "
            f"(e.g. {_relative(missing[0], root)}); each counts as a patient of its own",
            DataWarning,
            stacklevel=3,
        )
    return {
        split: [replace(s, patient=found.get(s.path, "")) for s in split_samples]
        for split, split_samples in splits.items()
    }


def _consistent_classes(root: Path, class_folders: dict[str, dict[str, Path]]) -> list[str]:
    """The class names of all splits; names that differ only in case are an error (they would
    become two classes), and a class missing from a split is a warning naming the folders."""
    names = sorted({name for folders in class_folders.values() for name in folders})
    spellings: dict[str, list[str]] = defaultdict(list)
    for name in names:
        spellings[name.casefold()].append(name)
    clashes = [group for group in spellings.values() if len(group) > 1]
    if clashes:
        shown = "; ".join(
            " vs ".join(
                _relative(folders[name], root)
                for name in group
                for folders in class_folders.values()
                if name in folders
            )
            for group in clashes
        )
        raise OctlensError(
            f"{root}: class folders differ only in letter case ({shown}); give each class one "
            "spelling in every split"
        )
    for split, folders in class_folders.items():
        missing = [name for name in names if name not in folders]
        if missing and len(class_folders) > 1:
            warnings.warn(
                f"{root}: split '{split}' has no folder for class(es) {', '.join(missing)}, "
                "which other splits have",
                DataWarning,
                stacklevel=3,
            )
    return names


def split_readable(
    paths: Iterable[Path], strict: bool = False
) -> tuple[list[Path], list[tuple[Path, str]]]:
    """The image files among ``paths`` that pass :func:`check_image` (which decodes them with
    ``strict=True``), and ``(path, reason)`` for the others; with ``strict=True`` the first bad
    one raises instead."""
    readable, skipped = read_each(paths, lambda path: check_image(path, decode=strict), strict)
    return [path for path, _ in readable], skipped


def read_each(
    paths: Iterable[Path], read: Callable[[Path], T], strict: bool = False
) -> tuple[list[tuple[Path, T]], list[tuple[Path, str]]]:
    """``(path, read(path))`` for each image file among ``paths`` that ``read`` accepts, and
    ``(path, reason)`` for the others (not an image file, or an :class:`UnreadableImageError`);
    with ``strict=True`` the first bad one raises instead."""
    readable, skipped = [], []
    for path in paths:
        try:
            if not is_image_file(path):
                raise UnreadableImageError(f"{path}: not an image file")
            readable.append((path, read(path)))
        except UnreadableImageError as error:
            if strict:
                raise
            skipped.append((path, str(error)))
    return readable, skipped


def warn_skipped(skipped: list[tuple[Path, str]], shown: int = 3) -> None:
    """One warning for all unreadable files: how many, and the first few reasons."""
    if not skipped:
        return
    first = "; ".join(reason for _, reason in skipped[:shown])
    more = f" (and {len(skipped) - shown} more)" if len(skipped) > shown else ""
    warnings.warn(
        f"skipped {len(skipped)} unreadable file(s): {first}{more}", DataWarning, stacklevel=3
    )


def _entries(folder: Path) -> list[Path]:
    """The entries of ``folder``; a folder that cannot be listed is a one-line error."""
    try:
        return list(folder.iterdir())
    except OSError as error:
        raise OctlensError(f"{folder}: cannot read folder ({error.strerror or error})") from None


def _subfolders(folder: Path, skip: Iterable[str]) -> list[Path]:
    return sorted(
        path
        for path in _entries(folder)
        if path.is_dir() and not path.name.startswith(".") and path.name not in skip
    )


def _ends(path: Path, size: int = 4096) -> bytes:
    with open(path, "rb") as handle:
        head = handle.read(size)
        handle.seek(max(len(head), path.stat().st_size - size))
        return head + handle.read(size)


def _relative(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def _scan_npz(path: Path) -> DatasetIndex:
    """A MedMNIST file: ``<split>_images`` (N,H,W[,C]) and ``<split>_labels`` (N,) or (N,1)."""
    arrays = _read_npz(path)
    split_names = sorted(key.removesuffix("_images") for key in arrays if key.endswith("_images"))
    if not split_names:
        raise OctlensError(f"{path}: no '<split>_images' arrays (is it a MedMNIST file?)")
    images, scales, labels_by_split = {}, {}, {}
    for split in split_names:
        labels_key = f"{split}_labels"
        if labels_key not in arrays:
            raise OctlensError(f"{path}: '{split}_images' has no matching '{labels_key}'")
        split_images = arrays[f"{split}_images"]
        if split_images.ndim not in (3, 4) or len(split_images) == 0:
            raise OctlensError(
                f"{path}: '{split}_images' has shape {split_images.shape}; expected (N, H, W) or "
                "(N, H, W, C) with N > 0"
            )
        labels = _labels(arrays[labels_key], f"{path}: '{labels_key}'")
        if len(labels) != len(split_images):
            raise OctlensError(
                f"{path}: '{split}' has {len(split_images)} images and {len(labels)} labels"
            )
        images[split] = split_images
        scales[split] = pixel_scale(split_images, f"{path}: '{split}_images'")
        labels_by_split[split] = labels
    present = sorted({int(label) for labels in labels_by_split.values() for label in labels})
    num_classes = present[-1] + 1
    if len(present) != num_classes:
        found = set(present)
        absent = list(itertools.islice((i for i in range(num_classes) if i not in found), 8))
        more = " ..." if num_classes - len(present) > len(absent) else ""
        raise OctlensError(
            f"{path}: labels run up to {num_classes - 1}, but no image has label(s) "
            f"{', '.join(map(str, absent))}{more}; labels must be 0..K-1 with every class present"
        )
    splits = {
        split: [
            Sample(path / split / f"{i:06d}", int(label), index=i) for i, label in enumerate(lbl)
        ]
        for split, lbl in labels_by_split.items()
    }
    # OCTMNIST's labels 0..3 are CNV, DME, DRUSEN, NORMAL; other sets get their label numbers.
    classes = list(OCT2017_CLASSES) if num_classes == 4 else [str(i) for i in range(num_classes)]
    return DatasetIndex(root=path, classes=classes, splits=splits, arrays=images, scales=scales)


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    """Every array of a ``.npz`` file, checked before it is loaded: a zip archive of plain
    (non-object) ``.npy`` members whose headers do not claim more data than they hold."""
    if not path.is_file():
        raise OctlensError(f"{path}: no such file")
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                _check_npy_member(path, archive, info)
        with np.load(path, allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    except OctlensError:
        raise
    except zipfile.BadZipFile as error:
        raise OctlensError(f"{path}: not a .npz archive ({error}; a .npy file renamed?)") from None
    except (OSError, ValueError, EOFError, zipfile.LargeZipFile, MemoryError) as error:
        raise OctlensError(f"{path}: not a readable .npz file ({error})") from None


def _check_npy_member(path: Path, archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> None:
    with archive.open(info) as member:
        version = np.lib.format.read_magic(member)
        read_header = (
            np.lib.format.read_array_header_1_0
            if version == (1, 0)
            else np.lib.format.read_array_header_2_0
        )
        shape, _, dtype = read_header(member)
    if dtype.hasobject:
        raise OctlensError(f"{path}: '{info.filename}' holds Python objects, not pixels or labels")
    claimed = int(np.prod(shape, dtype=np.float64)) * dtype.itemsize
    if claimed > info.file_size:
        raise OctlensError(
            f"{path}: '{info.filename}' claims shape {shape} ({claimed:,} bytes) but holds "
            f"{info.file_size:,} bytes (a damaged or forged file)"
        )


def _labels(array: np.ndarray, source: str) -> np.ndarray:
    """Class labels as integers >= 0, one per image: (N,) or (N, 1); multi-label sets refused."""
    if array.ndim == 0 or (array.ndim == 2 and array.shape[1] != 1) or array.ndim > 2:
        raise OctlensError(
            f"{source} has shape {array.shape}; expected one label per image, (N,) or (N, 1) "
            "(multi-label sets are not supported)"
        )
    labels = array.reshape(len(array))
    if labels.dtype == bool or not np.issubdtype(labels.dtype, np.number):
        raise OctlensError(f"{source}: labels of type {labels.dtype}; expected integers")
    if len(labels) and not (np.isfinite(labels).all() and (labels == np.rint(labels)).all()):
        raise OctlensError(f"{source}: labels must be whole numbers")
    if len(labels) and labels.min() < 0:
        raise OctlensError(f"{source}: negative label {labels.min():g}")
    if len(labels) and labels.max() >= MAX_CLASSES:
        raise OctlensError(
            f"{source}: label {labels.max():g} is beyond any class count (at most {MAX_CLASSES:,})"
        )
    return labels.astype(np.int64)
