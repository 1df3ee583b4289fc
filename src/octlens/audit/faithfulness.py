"""Faithfulness of saliency maps: does the model's confidence follow the pixels a map ranks first?

**Deletion and insertion** (Petsiuk et al., RISE, BMVC 2018). Rank pixels by the map, most salient
first. Deletion replaces the top ``k * n / steps`` pixels with a baseline value and records the
target-class probability ``p_k`` for ``k = 0 .. steps``; insertion starts from a blurred copy and
puts the original pixels back in the same order. The score is the area under ``p`` over the
fraction changed ``x_k`` (trapezoid rule): a faithful map gives a *low* deletion AUC (confidence
collapses as soon as the important pixels go) and a *high* insertion AUC. Ties in a map are broken
at random (seeded), so a constant map scores like a random one.

**Average drop and increase** (Chattopadhyay et al., Grad-CAM++, WACV 2018). The map, scaled to
[0, 1], blends each image with the baseline, ``x' = b + m * (x - b)``; with ``Y`` the target
probability on ``x`` and ``O`` on ``x'``, average drop is ``mean(max(0, Y - O) / Y)`` and average
increase the share of images with ``O > Y``. Lower drop and higher increase are better.

**Random baseline**: :func:`random_maps` draws smooth random maps (noise on a coarse grid,
upsampled), so a reader sees whether a method beats chance under the same protocol.

All perturbed copies of all images go through the model in batches of ``batch_size``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F
from torchvision.transforms.v2 import functional as TF

from octlens.explain.base import preserved_state, scaled_to_unit, target_probabilities
from octlens.runtime import PrecisionPlan, plan_for


@dataclass
class PerturbationCurves:
    """Target probabilities along deletion and insertion, per image, and the x axis."""

    fractions: torch.Tensor  # (steps + 1,) share of pixels changed
    deletion: torch.Tensor  # (B, steps + 1)
    insertion: torch.Tensor  # (B, steps + 1)

    @property
    def deletion_auc(self) -> torch.Tensor:
        """(B,) area under the deletion curve: lower is more faithful."""
        return torch.trapezoid(self.deletion, self.fractions, dim=1)

    @property
    def insertion_auc(self) -> torch.Tensor:
        """(B,) area under the insertion curve: higher is more faithful."""
        return torch.trapezoid(self.insertion, self.fractions, dim=1)


def deletion_insertion(
    model: nn.Module,
    images: torch.Tensor,
    maps: torch.Tensor,
    targets: torch.Tensor,
    steps: int = 50,
    baseline: float = 0.0,
    blur_sigma: float | None = None,
    batch_size: int = 128,
    precision: str | PrecisionPlan = "auto",
    seed: int = 0,
) -> PerturbationCurves:
    """Deletion and insertion curves of ``maps`` (B, H, W) on ``images`` (B, C, H, W).

    ``baseline`` is the value deleted pixels take, in the model's input space (the demo passes
    normalized black). Insertion starts from a Gaussian blur of sigma ``blur_sigma`` px (default
    5 px per 224 px of image height, RISE's setting).
    """
    batch, _, height, width = images.shape
    if maps.shape != (batch, height, width):
        raise ValueError(f"maps {tuple(maps.shape)} do not match images {tuple(images.shape)}")
    pixels = height * width
    per_step = -(-pixels // steps)
    counts = torch.clamp(torch.arange(steps + 1) * per_step, max=pixels).to(images.device)
    rank = _pixel_ranks(maps, seed)  # (B, H * W): 0 for the most salient pixel
    sigma = blur_sigma if blur_sigma is not None else 5.0 * height / 224
    blurred = TF.gaussian_blur(images, kernel_size=2 * round(3 * sigma) + 1, sigma=sigma)
    fill = torch.full_like(images[:1], baseline)

    image_of = torch.arange(batch, device=images.device).repeat_interleave(steps + 1)
    step_of = torch.arange(steps + 1, device=images.device).repeat(batch)

    def perturbed(chunk: torch.Tensor, deleting: bool) -> torch.Tensor:
        changed = rank[image_of[chunk]] < counts[step_of[chunk], None]
        changed = changed.view(len(chunk), 1, height, width)
        originals = images[image_of[chunk]]
        if deleting:
            return torch.where(changed, fill, originals)
        return torch.where(changed, originals, blurred[image_of[chunk]])

    curves = {}
    for name, deleting in (("deletion", True), ("insertion", False)):
        probs = _probabilities(
            model,
            functools.partial(perturbed, deleting=deleting),
            image_of,
            targets,
            batch_size,
            precision,
        )
        curves[name] = probs.view(batch, steps + 1)
    fractions = counts.float().cpu() / pixels
    return PerturbationCurves(fractions, curves["deletion"], curves["insertion"])


def average_drop_increase(
    model: nn.Module,
    images: torch.Tensor,
    maps: torch.Tensor,
    targets: torch.Tensor,
    baseline: float = 0.0,
    batch_size: int = 128,
    precision: str | PrecisionPlan = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image: relative confidence drop ``max(0, Y - O) / Y`` and whether ``O > Y``.

    Average them over images (and multiply by 100) for the papers' "average drop %" and
    "increase in confidence %".
    """
    weights = scaled_to_unit(maps)[:, None]
    both = torch.cat([images, baseline + weights * (images - baseline)])
    index = torch.arange(2 * len(images), device=images.device)
    probs = _probabilities(
        model, lambda chunk: both[chunk], index % len(images), targets, batch_size, precision
    )
    original, masked = probs[: len(images)], probs[len(images) :]
    return (original - masked).clamp_min(0) / original.clamp_min(1e-12), masked > original


def random_maps(shape: tuple[int, int, int], grid: int = 7, seed: int = 0) -> torch.Tensor:
    """(B, H, W) smooth random maps: uniform noise on a ``grid`` x ``grid`` lattice, upsampled."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(shape[0], 1, grid, grid, generator=generator)
    return F.interpolate(coarse, size=shape[1:], mode="bilinear", align_corners=False)[:, 0]


def stratified_sample(groups: torch.Tensor, size: int | None, seed: int = 0) -> torch.Tensor:
    """Sorted indices of ``size`` of the items whose group (such as the predicted class) is
    ``groups`` (N,), each group drawn without replacement in proportion to its size (largest
    remainders; every group at least once when ``size`` allows), so the sample's mix of groups
    is the audit's. All N indices when ``size`` is None or not below N."""
    groups = groups.cpu()
    n = len(groups)
    if size is None or size >= n:
        return torch.arange(n)
    names, counts = groups.unique(return_counts=True)
    quotas = counts.double() * size / n
    taken = quotas.floor().long()
    if size >= len(names):
        taken = taken.clamp_min(1)
    order = (quotas - quotas.floor()).argsort(descending=True, stable=True)
    for position in order.tolist():
        if int(taken.sum()) >= size:
            break
        if taken[position] < counts[position]:
            taken[position] += 1
    while int(taken.sum()) > size:  # the floor of one per group overshot: trim the largest
        taken[int(taken.argmax())] -= 1
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for name, count in zip(names.tolist(), taken.tolist(), strict=True):
        members = torch.nonzero(groups == name).flatten()
        chosen.append(members[torch.randperm(len(members), generator=generator)[:count]])
    return torch.cat(chosen).sort().values


def _pixel_ranks(maps: torch.Tensor, seed: int) -> torch.Tensor:
    """(B, H * W) position of each pixel when sorted by saliency, ties in random order."""
    flat = maps.flatten(1)
    generator = torch.Generator().manual_seed(seed)
    shuffle = torch.stack(
        [torch.randperm(flat.shape[1], generator=generator) for _ in range(len(flat))]
    ).to(flat.device)
    order = shuffle.gather(1, flat.gather(1, shuffle).argsort(dim=1, descending=True, stable=True))
    rank = torch.empty_like(order)
    positions = torch.arange(flat.shape[1], device=flat.device).expand_as(order)
    return rank.scatter_(1, order, positions)


@torch.inference_mode()
def _probabilities(model, make_batch, image_of, targets, batch_size, precision) -> torch.Tensor:
    """Target probability of every copy ``make_batch(indices)`` builds, in index order."""
    plan = plan_for(precision, next(model.parameters()).device, measuring=True)
    probs = []
    with preserved_state(model), plan.autocast():
        model.eval()
        for start in range(0, len(image_of), batch_size):
            stop = min(start + batch_size, len(image_of))
            chunk = torch.arange(start, stop, device=targets.device)
            logits = model(make_batch(chunk))
            probs.append(target_probabilities(logits, targets[image_of[chunk]]))
    return torch.cat(probs).cpu()
