"""The PyTorch view of a :class:`~octlens.data.index.DatasetIndex` split."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, default_collate

from octlens.data.images import UnreadableImageError
from octlens.data.index import DatasetIndex, DataWarning, Sample
from octlens.data.transforms import Normalization
from octlens.errors import OctlensError


class OCTDataset(Dataset[tuple[torch.Tensor, int]]):
    """``(image (1,H,W) float tensor, label)`` pairs.

    A file that passed the index's header check but fails to decode is replaced by the next
    sample, with a warning, so one bad file never stops an epoch; ``strict=True`` raises instead.

    With ``epoch_seed`` set, a random transform draws from a stream seeded by that seed and the
    sample's position, so a scan is augmented alike in any data worker or training process.
    """

    epoch_seed: int | None = None

    def __init__(
        self,
        index: DatasetIndex,
        samples: Sequence[Sample],
        transform: Callable[..., torch.Tensor],
        decode_size: int | None = None,
        strict: bool = False,
    ) -> None:
        if not samples:
            raise ValueError("OCTDataset needs at least one sample")
        self.index = index
        self.samples = list(samples)
        self.transform = transform
        self.decode_size = decode_size
        self.strict = strict

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, position: int) -> tuple[torch.Tensor, int]:
        for offset in range(len(self.samples)):
            sample = self.samples[(position + offset) % len(self.samples)]
            try:
                image = self.index.load(sample, self.decode_size)
            except UnreadableImageError as error:
                if self.strict:
                    raise
                warnings.warn(f"{error}; using the next image instead", DataWarning, stacklevel=2)
                continue
            return self._transformed(image, position), sample.label
        raise UnreadableImageError(f"{self.index.root}: none of the images could be decoded")

    @property
    def labels(self) -> list[int]:
        return [sample.label for sample in self.samples]

    def _transformed(self, image: Image.Image, position: int) -> torch.Tensor:
        if self.epoch_seed is None:
            return self.transform(image)
        # The CPU generator only: torch.manual_seed also seeds every accelerator (~0.2 ms a call).
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed((self.epoch_seed * 1_000_003 + position) % 2**63)
            return self.transform(image)


class ScansForEvaluation(OCTDataset):
    """``(image, position in samples)`` pairs, or ``None`` for a scan that fails to decode.

    Evaluation must never stand one scan in for another (that would count it twice and give
    its answer another scan's label), so a broken scan is left out: batch with
    :func:`collate_readable`, and the positions that come back say which scans were scored.
    """

    def __getitem__(self, position: int) -> tuple[torch.Tensor, int] | None:  # type: ignore[override]
        try:
            image = self.index.load(self.samples[position], self.decode_size)
        except UnreadableImageError:
            return None
        return self.transform(image), position


def collate_readable(
    batch: list[tuple[torch.Tensor, int] | None],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack the readable items of a batch; a batch of none gives empty tensors."""
    readable = [item for item in batch if item is not None]
    if not readable:
        return torch.empty(0), torch.empty(0, dtype=torch.long)
    return default_collate(readable)


def left_out(index: DatasetIndex, samples: list[Sample], scored: set[int]) -> list[Sample]:
    """The samples not in ``scored`` (they failed to decode), named in one warning with the
    reason of each; none scored at all is an error."""
    missing = [sample for position, sample in enumerate(samples) if position not in scored]
    if not missing:
        return []
    reasons = []
    for sample in missing[:3]:
        try:
            index.load(sample)
            reasons.append(f"{sample.path}: could not be decoded")
        except UnreadableImageError as error:
            reasons.append(str(error))
    if len(missing) == len(samples):
        raise OctlensError(f"none of the {len(samples)} scans could be read ({reasons[0]})")
    more = f" (and {len(missing) - 3} more)" if len(missing) > 3 else ""
    warnings.warn(
        f"left out {len(missing)} unreadable scan(s) of {len(samples)}: {'; '.join(reasons)}{more}",
        DataWarning,
        stacklevel=3,
    )
    return missing


def estimate_normalization(
    index: DatasetIndex,
    samples: Sequence[Sample],
    img_size: int,
    max_images: int = 256,
    seed: int = 0,
) -> Normalization:
    """Pixel mean and std of (a seeded subset of) ``samples`` at the training resolution."""
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(samples), size=min(max_images, len(samples)), replace=False)
    total = total_sq = count = 0.0
    for position in sorted(chosen):
        try:
            image = index.load(samples[position], img_size).resize((img_size, img_size))
        except UnreadableImageError:
            continue  # the dataset warns about it when training reaches it
        pixels = np.asarray(image, dtype=np.float64) / 255.0
        total += pixels.sum()
        total_sq += np.square(pixels).sum()
        count += pixels.size
    if not count:
        raise UnreadableImageError(f"{index.root}: none of the sampled images could be decoded")
    mean = total / count
    std = max(np.sqrt(max(total_sq / count - mean**2, 0.0)), 1e-3)
    return Normalization(mean=round(float(mean), 4), std=round(float(std), 4))
