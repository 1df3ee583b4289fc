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

import re
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from octlens.data.images import UnreadableImageError, check_image, is_image_file, load_grayscale
from octlens.errors import OctlensError

MASK_FOLDERS = ("masks", "retina")
SINGLE_SPLIT = "all"
OCT2017_CLASSES = ("CNV", "DME", "DRUSEN", "NORMAL")

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
            return Image.fromarray(_to_gray_uint8(self.arrays[split][sample.index]))
        return load_grayscale(sample.path, target_size)

    def mask_path(self, sample: Sample, kind: str = "masks") -> Path | None:
        """The mirrored mask of ``sample`` under ``ROOT/<kind>/``, if the dataset has one."""
        if sample.index is not None:
            return None
        relative = sample.path.relative_to(self.root).with_suffix(".png")
        candidate = self.root / kind / relative
        return candidate if candidate.is_file() else None


def scan(root: str | Path, strict: bool = False) -> DatasetIndex:
    """Index a dataset folder or MedMNIST ``.npz`` file.

    Unreadable files are skipped with one :class:`DataWarning` that counts them and names the
    first few; with ``strict=True`` the first one is an error instead.
    """
    root = Path(root)
    if root.suffix == ".npz":
        return _scan_npz(root)
    if not root.is_dir():
        raise OctlensError(f"{root}: no such dataset folder")
    folders = _subfolders(root, skip=MASK_FOLDERS)
    if not folders:
        raise OctlensError(f"{root}: no class or split folders inside")
    if any(is_image_file(path) for folder in folders for path in folder.iterdir()):
        split_folders = {SINGLE_SPLIT: root}
    else:
        split_folders = {folder.name: folder for folder in folders}

    class_folders: dict[str, dict[str, Path]] = {}
    for split, split_root in split_folders.items():
        classes = _subfolders(split_root, skip=MASK_FOLDERS if split_root == root else ())
        if not classes:
            raise OctlensError(f"{split_root}: split folder has no class folders")
        class_folders[split] = {folder.name: folder for folder in classes}
    classes = sorted({name for folders_ in class_folders.values() for name in folders_})

    splits: dict[str, list[Sample]] = {}
    skipped: list[tuple[Path, str]] = []
    for split, by_class in class_folders.items():
        samples = []
        for name, folder in sorted(by_class.items()):
            files = sorted(path for path in folder.iterdir() if is_image_file(path))
            if not files:
                raise OctlensError(f"{folder}: class folder has no images")
            readable, unreadable = split_readable(files, strict)
            skipped += unreadable
            if not readable:
                raise OctlensError(f"{folder}: class folder has no readable images")
            label = classes.index(name)
            samples += [Sample(path, label, patient_id(path)) for path in readable]
        splits[split] = samples
    warn_skipped(skipped)
    return DatasetIndex(root=root, classes=classes, splits=splits, skipped=skipped)


def split_readable(
    paths: Iterable[Path], strict: bool = False
) -> tuple[list[Path], list[tuple[Path, str]]]:
    """The image files among ``paths`` that pass :func:`check_image`, and ``(path, reason)`` for
    the others; with ``strict=True`` the first bad one raises instead."""
    readable, skipped = [], []
    for path in paths:
        try:
            if not is_image_file(path):
                raise UnreadableImageError(f"{path}: not an image file")
            check_image(path)
        except UnreadableImageError as error:
            if strict:
                raise
            skipped.append((path, str(error)))
            continue
        readable.append(path)
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


def _subfolders(folder: Path, skip: Iterable[str]) -> list[Path]:
    return sorted(
        path
        for path in folder.iterdir()
        if path.is_dir() and not path.name.startswith(".") and path.name not in skip
    )


def _to_gray_uint8(array: np.ndarray) -> np.ndarray:
    if array.ndim == 3:  # colour MedMNIST sets: average the channels
        array = array.mean(axis=-1)
    if array.dtype != np.uint8:
        array = np.clip(array, 0, 255).astype(np.uint8)
    return array


def _scan_npz(path: Path) -> DatasetIndex:
    """A MedMNIST file: ``<split>_images`` (N,H,W[,C]) and ``<split>_labels`` (N,1)."""
    if not path.is_file():
        raise OctlensError(f"{path}: no such file")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (OSError, ValueError) as error:
        raise OctlensError(f"{path}: not a readable .npz file ({error})") from None
    split_names = sorted(key.removesuffix("_images") for key in arrays if key.endswith("_images"))
    if not split_names:
        raise OctlensError(f"{path}: no '<split>_images' arrays (is it a MedMNIST file?)")
    images, splits, num_classes = {}, {}, 0
    for split in split_names:
        labels_key = f"{split}_labels"
        if labels_key not in arrays:
            raise OctlensError(f"{path}: '{split}_images' has no matching '{labels_key}'")
        labels = arrays[labels_key].reshape(len(arrays[labels_key]), -1)[:, 0].astype(int)
        if len(labels) != len(arrays[f"{split}_images"]):
            raise OctlensError(f"{path}: '{split}' has a different number of images and labels")
        images[split] = arrays[f"{split}_images"]
        num_classes = max(num_classes, int(labels.max()) + 1)
        splits[split] = [
            Sample(path / split / f"{i:06d}", int(label), index=i) for i, label in enumerate(labels)
        ]
    # OCTMNIST's labels 0..3 are CNV, DME, DRUSEN, NORMAL; other sets get their label numbers.
    classes = list(OCT2017_CLASSES) if num_classes == 4 else [str(i) for i in range(num_classes)]
    return DatasetIndex(root=path, classes=classes, splits=splits, arrays=images)
