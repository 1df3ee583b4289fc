"""The scans an audit runs on, with their masks, loaded once at the model's input size.

Lesion masks are per scan: a scan with a file under the data's ``masks/`` folder is annotated
(an all-zero mask: annotated, no lesion), a scan without one is not, and only its localization is
skipped. Any non-zero mask value is lesion (a grader's export may use 1, 255 or a label number).
A mask stored at another size than its scan is resized like it, nearest neighbour, with one
warning (a lesion too thin to survive that keeps the pixels it touches); a mask of another
shape, or a file that cannot be read, is one warning naming it, and its scan counts as not
annotated. Retina masks are all or nothing: the data's ``retina/`` folder when every scan has one
(synthetic data), else :func:`octlens.data.retina.find_retina` on every scan, so that all scans'
regions are drawn the same way.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from octlens.data.dataset import left_out
from octlens.data.images import UnreadableImageError, load_grayscale, load_mask
from octlens.data.index import DatasetIndex, DataWarning, Sample
from octlens.data.marks import read_marks
from octlens.data.retina import burned_in_overlays, find_retina, scanner_fill
from octlens.data.transforms import Normalization, eval_transform
from octlens.progress import counted, progress_bar


@dataclass
class AuditBatch:
    """Everything the audit needs about its scans, at the model's input size."""

    samples: list[Sample]  # the scans that could be read, in order
    unreadable: list[Sample]  # the scans left out because they could not be decoded
    images: torch.Tensor  # (N, 1, S, S) normalized
    display: np.ndarray  # (N, S, S) [0, 1] for figures
    # (N, S, S) bool, all False for a scan without a mask; None when no scan has one
    lesions: torch.Tensor | None
    annotated: torch.Tensor | None  # (N,) bool: the scan has a readable lesion mask
    retina: torch.Tensor  # (N, S, S) bool
    fill: torch.Tensor  # (N, S, S) bool
    overlay: torch.Tensor  # (N, S, S) bool: burned-in marks, never retina
    retina_source: str  # "masks" or "estimated"
    marks: list[str | None] | None  # class name of each scan's planted mark, if any
    sizes: list[tuple[int, int]]  # (height, width) of each scan as stored


def load_audit_batch(
    index: DatasetIndex,
    samples: list[Sample],
    img_size: int,
    normalization: Normalization,
    verbose: bool = True,
    estimate_retina: bool = False,
) -> AuditBatch:
    """Load ``samples`` and their masks (lesion, retina, scanner fill, overlays) at
    ``img_size``; the retina from the data's ``retina/`` masks unless ``estimate_retina`` or
    the data has none. A progress bar counts the scans (finding the retina takes a while)."""
    transform = eval_transform(img_size, normalization)
    images, display, retina, fill, overlay, sizes = [], [], [], [], [], []
    lesion_masks = _LesionMasks(index, img_size)
    retina_paths = None if estimate_retina else _mask_paths(index, samples, "retina")
    scored = set()
    with progress_bar("loading scans for the audit", len(samples), verbose=verbose) as advance:
        for position, sample in enumerate(counted(samples, advance)):
            try:
                scan_image = index.load(sample)
                # the model sees the scan decoded as evaluation and training decode it
                model_image = index.load(sample, img_size)
            except UnreadableImageError:
                continue
            scored.add(position)
            pixels = np.asarray(scan_image)
            sizes.append(pixels.shape)
            images.append(transform(model_image))
            display.append(_resized(pixels, img_size, Image.Resampling.BILINEAR) / 255)
            lesion_masks.add(sample, pixels.shape)
            if retina_paths:
                # the data's masks are trusted: a found mark counts only off them
                masked = _mask_at(retina_paths[position], img_size)
                retina.append(masked)
                fill.append(_mask_of(scanner_fill(pixels), img_size))
                overlay.append(_covered(burned_in_overlays(pixels), img_size) & ~masked)
            else:
                found = find_retina(pixels)
                drawn = _covered(found.overlay, img_size)
                retina.append(_mask_of(found.mask(), img_size) & ~drawn)
                fill.append(_mask_of(found.fill, img_size))
                overlay.append(drawn)
    lesion_masks.warn()
    unreadable = left_out(index, samples, scored)
    readable = [sample for position, sample in enumerate(samples) if position in scored]
    lesions, annotated = lesion_masks.stacked()
    return AuditBatch(
        samples=readable,
        unreadable=unreadable,
        images=torch.stack(images),
        display=np.stack(display).astype(np.float32),
        lesions=lesions,
        annotated=annotated,
        retina=torch.from_numpy(np.stack(retina)),
        fill=torch.from_numpy(np.stack(fill)),
        overlay=torch.from_numpy(np.stack(overlay)),
        retina_source="masks" if retina_paths else "estimated",
        marks=read_marks(index, readable),
        sizes=sizes,
    )


class _LesionMasks:
    """The lesion masks of the scans read so far, and what was wrong with their files."""

    def __init__(self, index: DatasetIndex, img_size: int) -> None:
        self.index, self.img_size = index, img_size
        self.masks: list[np.ndarray] = []
        self.annotated: list[bool] = []
        self.resized: list[Path] = []
        self.broken: list[str] = []

    def add(self, sample: Sample, scan_shape: tuple[int, ...]) -> None:
        path = self.index.mask_path(sample, "masks")
        mask = None
        if path is not None:
            try:
                stored = load_mask(path)
            except UnreadableImageError as error:
                self.broken.append(str(error))
            else:
                mask = self._resized_like(path, stored, scan_shape[:2])
        self.annotated.append(mask is not None)
        self.masks.append(np.zeros((self.img_size,) * 2, bool) if mask is None else mask)

    def _resized_like(
        self, path: Path, stored: np.ndarray, scan_shape: tuple[int, ...]
    ) -> np.ndarray | None:
        """``stored`` at the model's input size, None (with a warning) when its shape is not
        its scan's even up to scale (a transposed or cropped export would be misaligned). A
        lesion too thin for a nearest-neighbour sample is kept by the pixels it touches: a
        scan must not turn into "annotated, no lesion" by resizing."""
        if stored.shape != scan_shape:
            ratio = (stored.shape[0] / stored.shape[1]) / (scan_shape[0] / scan_shape[1])
            if abs(ratio - 1) > 0.02:
                self.broken.append(
                    f"{path}: a {stored.shape[1]}x{stored.shape[0]} mask for a "
                    f"{scan_shape[1]}x{scan_shape[0]} scan (another shape, not a scale of it)"
                )
                return None
            self.resized.append(path)
        mask = _mask_of(stored, self.img_size)
        if stored.any() and not mask.any():
            mask = _covered(stored, self.img_size)
        return mask

    def warn(self) -> None:
        if self.broken:  # one warning, as for unreadable scans: a thousand would bury the rest
            more = len(self.broken) - 3
            shown = "; ".join(self.broken[:3]) + (f"; and {more} more" if more > 0 else "")
            warnings.warn(
                f"{len(self.broken)} lesion mask(s) left out, and each such scan counts as not "
                f"annotated: {shown}",
                DataWarning,
                stacklevel=3,
            )
        if self.resized:
            warnings.warn(
                f"{len(self.resized)} lesion mask(s) differ in size from their scan (e.g. "
                f"{self.resized[0]}); resized to it, nearest neighbour",
                DataWarning,
                stacklevel=3,
            )

    def stacked(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        if not any(self.annotated):
            return None, None
        return torch.from_numpy(np.stack(self.masks)), torch.tensor(self.annotated)


def _resized(pixels: np.ndarray, size: int, resample=Image.Resampling.NEAREST) -> np.ndarray:
    image = Image.fromarray(pixels.astype(np.uint8) * (255 if pixels.dtype == bool else 1))
    return np.asarray(image.resize((size, size), resample), dtype=np.float32)


def _mask_of(mask: np.ndarray, size: int) -> np.ndarray:
    return _resized(mask, size) > 0


def _covered(mask: np.ndarray, size: int) -> np.ndarray:
    """``mask`` at ``size``, every pixel it touches at all: a mark's thin strokes must not
    fall between the samples of a nearest-neighbour resize and stay behind in a swap."""
    return _resized(mask, size, Image.Resampling.BOX) > 0


def _mask_paths(index: DatasetIndex, samples: list[Sample], kind: str) -> list[Path] | None:
    """Every sample's mask of ``kind``, or None unless all of them have one."""
    paths = [index.mask_path(sample, kind) for sample in samples]
    return [path for path in paths if path is not None] if all(paths) else None


def _mask_at(path: Path, size: int) -> np.ndarray:
    """A mask file at ``size``; a broken mask is a one-line error naming it, like a scan."""
    return _resized(np.asarray(load_grayscale(path)), size) > 127
