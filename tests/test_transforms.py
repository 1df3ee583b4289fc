from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torchvision import tv_tensors
from torchvision.transforms import v2

from octlens.data.transforms import Normalization, eval_transform, train_transform

NORM = Normalization(mean=0.2, std=0.25)


def _scan_with_lesion() -> tuple[Image.Image, tv_tensors.Mask]:
    """A 496x768 'scan' whose bright pixels are exactly its lesion mask."""
    mask = np.zeros((496, 768), dtype=np.uint8)
    mask[300:360, 100:260] = 1
    mask[200:230, 500:700] = 1
    return Image.fromarray(mask * 255), tv_tensors.Mask(torch.from_numpy(mask)[None])


def test_eval_transform_squashes_the_whole_scan_to_a_square():
    image, _ = _scan_with_lesion()
    tensor = eval_transform(64, NORM)(image)
    assert tensor.shape == (1, 64, 64) and tensor.dtype == torch.float32
    pixels = tensor * NORM.std + NORM.mean
    # Nothing cropped: both lesions survive, at their relative positions.
    assert pixels[0, 300 * 64 // 496 + 2, 100 * 64 // 768 + 2] > 0.9
    assert pixels[0, 200 * 64 // 496 + 2, 690 * 64 // 768] > 0.9


def test_masks_follow_the_image_through_random_geometry():
    image, mask = _scan_with_lesion()
    transform = train_transform(96, NORM)
    for seed in range(8):
        torch.manual_seed(seed)
        tensor, moved = transform(image, mask)
        assert isinstance(moved, tv_tensors.Mask) and moved.shape == (1, 96, 96)
        assert set(moved.unique().tolist()) <= {0, 1}, "masks are resampled, not blended"
        bright = (tensor * NORM.std + NORM.mean) > 0.5
        overlap = (bright & moved.bool()).sum() / (bright | moved.bool()).sum()
        assert overlap > 0.8, f"seed {seed}: image and mask moved apart (IoU {overlap:.2f})"


def test_augmentation_strength_zero_leaves_flips_only_and_strength_widens_the_ranges():
    image, _ = _scan_with_lesion()
    plain = eval_transform(64, NORM)(image)
    for seed in range(6):
        torch.manual_seed(seed)
        out = train_transform(64, NORM, strength=0.0)(image)
        assert torch.equal(out, plain) or torch.equal(out, plain.flip(-1))
    steps = train_transform(64, NORM, strength=2.0).transforms
    affine = next(step for step in steps if isinstance(step, v2.RandomAffine))
    assert affine.degrees == [-16.0, 16.0] and affine.translate == (0.1, 0.1)
    assert affine.scale == (0.8, 1.2)
