"""Geometry and intensity transforms for B-scans, shared by images and their masks.

Resize policy: the whole scan is resized to a square ``img_size`` x ``img_size``, without cropping
or padding. OCT2017 scans are 496 px high and 512, 768, 1024 or 1536 px wide, and the wide ones
sample the same lateral field with more A-scans, so squashing puts the retina at the same scale in
every scan; a crop would cut lesions at the edges, and padding would add a uniform border, which is
exactly the kind of non-retinal cue a model should not get.

Augmentation suits OCT: a horizontal flip (left and right eyes are mirror images), small rotations
and shifts (scan tilt and position vary), mild zoom, brightness and contrast (gain varies between
scans). No vertical flip: the layer order from vitreous to choroid is anatomy, not noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torchvision.transforms import v2


@dataclass(frozen=True)
class Normalization:
    """Single-channel intensity normalization applied after scaling pixels to [0, 1]."""

    mean: float
    std: float


def eval_transform(img_size: int, normalization: Normalization) -> v2.Compose:
    return v2.Compose([*_resize(img_size), *_to_normalized(normalization)])


def train_transform(
    img_size: int, normalization: Normalization, strength: float = 1.0
) -> v2.Compose:
    """Flips, then rotation (8 degrees), shift (5%), zoom (10%) and brightness and contrast
    jitter (20%), each range multiplied by ``strength`` (0: flips only; 2: twice as wide)."""
    return v2.Compose(
        [
            *_resize(img_size),
            v2.RandomHorizontalFlip(),
            v2.RandomAffine(
                degrees=8 * strength,
                translate=(0.05 * strength, 0.05 * strength),
                scale=(1 - 0.1 * strength, 1 + 0.1 * strength),
            ),
            v2.ColorJitter(brightness=0.2 * strength, contrast=0.2 * strength),
            *_to_normalized(normalization),
        ]
    )


def _resize(img_size: int) -> list[v2.Transform]:
    return [v2.ToImage(), v2.Resize((img_size, img_size), antialias=True)]


def _to_normalized(normalization: Normalization) -> list[v2.Transform]:
    return [
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize([normalization.mean], [normalization.std]),
    ]


def renormalize(images: torch.Tensor, source: Normalization, target: Normalization) -> torch.Tensor:
    """Images normalized with ``source`` as ``target`` would have normalized the same pixels."""
    if source == target:
        return images
    return (images * source.std + source.mean - target.mean) / target.std
