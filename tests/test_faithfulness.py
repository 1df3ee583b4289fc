"""Deletion/insertion and average drop/increase against hand computation on models we can solve."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.transforms.v2 import functional as TF

from octlens.audit.faithfulness import average_drop_increase, deletion_insertion, random_maps


class SumModel(nn.Module):
    """Two classes with logits (weighted pixel sum, 0): p(class 0) = sigmoid(sum(w * x))."""

    def __init__(self, weights: torch.Tensor) -> None:
        super().__init__()
        self.weights = nn.Parameter(weights.clone(), requires_grad=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        score = (images[:, 0] * self.weights).flatten(1).sum(dim=1)
        return torch.stack([score, torch.zeros_like(score)], dim=1)


def test_deletion_and_insertion_curves_match_hand_computation():
    image = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    model = SumModel(torch.ones(2, 2))
    saliency = torch.tensor([[[0.1, 0.9], [0.5, 0.2]]])  # order: (0,1)=2, (1,0)=3, (1,1)=4, (0,0)=1
    target = torch.tensor([0])
    curves = deletion_insertion(
        model, image, saliency, target, steps=4, baseline=-1.0, precision="fp32"
    )

    # Deletion sets pixels to -1 in saliency order: sums 10, 7, 3, -2, -4.
    deleted = torch.sigmoid(torch.tensor([[10.0, 7.0, 3.0, -2.0, -4.0]]))
    torch.testing.assert_close(curves.deletion, deleted)
    torch.testing.assert_close(curves.fractions, torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0]))
    expected_auc = 0.25 * (deleted[0, 0] / 2 + deleted[0, 1:4].sum() + deleted[0, 4] / 2)
    assert curves.deletion_auc.item() == pytest.approx(expected_auc.item(), rel=1e-6)

    sigma = 5.0 * 2 / 224
    blurred = TF.gaussian_blur(image, kernel_size=2 * round(3 * sigma) + 1, sigma=sigma)[0, 0]
    sums, current = [], blurred.clone()
    sums.append(current.sum())
    for row, col in ((0, 1), (1, 0), (1, 1), (0, 0)):
        current[row, col] = image[0, 0, row, col]
        sums.append(current.sum())
    torch.testing.assert_close(curves.insertion[0], torch.sigmoid(torch.stack(sums)))


def test_a_map_of_the_true_evidence_beats_random_maps_and_batches_do_not_matter():
    torch.manual_seed(0)
    weights = torch.zeros(16, 16)
    weights[:4, :4] = 0.05  # the model reads only the top-left corner
    model = SumModel(weights)
    images = -torch.ones(6, 1, 16, 16)
    images[:, :, :4, :4] = 1.0 + torch.rand(6, 1, 4, 4)  # bright evidence the blur smears out
    targets = torch.zeros(6, dtype=torch.long)
    truth = weights.expand(6, 16, 16) + 0.01 * torch.rand(6, 16, 16)
    settings = {"steps": 16, "baseline": -1.0, "blur_sigma": 3.0}
    faithful = deletion_insertion(model, images, truth, targets, **settings)
    chance = deletion_insertion(
        model, images, random_maps((6, 16, 16), seed=1), targets, **settings
    )
    assert (faithful.deletion_auc < chance.deletion_auc - 0.05).all()
    assert (faithful.insertion_auc > chance.insertion_auc + 0.05).all()

    one_at_a_time = deletion_insertion(model, images, truth, targets, batch_size=1, **settings)
    torch.testing.assert_close(one_at_a_time.deletion, faithful.deletion)
    torch.testing.assert_close(one_at_a_time.insertion, faithful.insertion)


def test_ties_are_broken_at_random_not_in_raster_order():
    weights = torch.zeros(8, 8)
    weights[:2] = 1.0  # evidence in the top rows, where raster order would delete first
    model = SumModel(weights)
    image = torch.ones(1, 1, 8, 8)
    flat = deletion_insertion(
        model, image, torch.zeros(1, 8, 8), torch.tensor([0]), steps=4, baseline=-1.0
    )
    raster = deletion_insertion(
        model,
        image,
        -torch.arange(64.0).view(1, 8, 8),
        torch.tensor([0]),
        steps=4,
        baseline=-1.0,
    )
    assert flat.deletion_auc.item() > raster.deletion_auc.item()


def test_average_drop_and_increase_match_hand_computation():
    model = SumModel(torch.ones(1, 2))
    images = torch.tensor([[[[2.0, 1.0]]], [[[1.0, -1.0]]]])
    maps = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])  # scaled to [1, 0] and [0, 1]
    targets = torch.tensor([0, 0])
    drop, increase = average_drop_increase(
        model, images, maps, targets, baseline=0.0, precision="fp32"
    )
    # Image 1 keeps 2, loses 1: Y = s(3), O = s(2). Image 2 keeps -1: Y = s(0), O = s(-1).
    y = torch.sigmoid(torch.tensor([3.0, 0.0]))
    o = torch.sigmoid(torch.tensor([2.0, -1.0]))
    torch.testing.assert_close(drop, (y - o) / y)
    assert increase.tolist() == [False, False]

    raised, increased = average_drop_increase(
        model, torch.tensor([[[[2.0, -1.0]]]]), torch.tensor([[[1.0, 0.0]]]), targets[:1]
    )
    assert raised.item() == 0.0 and increased.item()


def test_random_maps_are_smooth_seeded_and_shaped():
    maps = random_maps((3, 32, 32), grid=4, seed=5)
    assert maps.shape == (3, 32, 32)
    torch.testing.assert_close(maps, random_maps((3, 32, 32), grid=4, seed=5))
    neighbour_step = (maps[:, :, 1:] - maps[:, :, :-1]).abs().max()
    assert neighbour_step < 0.2  # bilinear from a 4x4 lattice: no pixel noise
