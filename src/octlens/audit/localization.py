"""Localization of saliency maps against lesion masks (synthetic data has them pixel-exact).

- **Pointing game** (Zhang et al., IJCV 2018): a hit when the map's maximum lies within
  ``tolerance`` px of the lesion (the mask dilated by a square of that radius).
- **Energy-based pointing game** (Wang et al., Score-CAM, CVPRW 2020): the share of the map's
  positive mass that falls inside the lesion, ``sum(relu(m) * mask) / sum(relu(m))``.
- **Pixel AUROC**: the map as a per-pixel lesion detector, the area under its ROC curve against
  the mask: the Mann-Whitney statistic from average ranks, so tied pixels count half.
- **Within-retina AUROC**: the same among the retina's pixels only, lesion pixels against the
  other retina pixels. Lesions lie in the retina, which covers a fifth to a third of a B-scan, so
  the whole-image AUROC mostly measures finding the retina: a map uniform over the retina scores
  0.9 there and exactly 0.5 here. Lesion pixels outside the retina mask count on neither side.

Maps that never looked at the model set the bar a map must clear (:mod:`octlens.audit.priors`).
Each returns one value per image; images whose mask is empty (NORMAL scans) get NaN, so averages
skip them with ``nanmean``.
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F


def pointing_game(maps: torch.Tensor, masks: torch.Tensor, tolerance: int = 8) -> torch.Tensor:
    """(B,) 1.0 where the maximum of ``maps`` (B, H, W) hits ``masks`` (B, H, W), else 0.0."""
    masks = masks.bool()
    reach = masks.float()[:, None]
    if tolerance > 0:
        reach = F.max_pool2d(reach, 2 * tolerance + 1, stride=1, padding=tolerance)
    peak = maps.flatten(1).argmax(dim=1)
    hits = reach.flatten(1).gather(1, peak[:, None])[:, 0]
    return _nan_where_empty(hits, masks)


def energy_in_mask(maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """(B,) share of each map's positive mass inside its mask."""
    return _nan_where_empty(mass_share(maps, masks), masks.bool())


def pixel_auroc(maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """(B,) ROC AUC of map values as scores for mask pixels; NaN for empty (or full) masks."""
    return _auroc(maps, masks, torch.ones_like(masks, dtype=torch.bool))


def within_retina_auroc(
    maps: torch.Tensor, masks: torch.Tensor, retina: torch.Tensor
) -> torch.Tensor:
    """(B,) ROC AUC of map values for lesion pixels against the other pixels of the retina
    (B, H, W); NaN where the retina holds no lesion pixel or nothing else."""
    return _auroc(maps, masks, retina)


def _auroc(maps: torch.Tensor, masks: torch.Tensor, among: torch.Tensor) -> torch.Tensor:
    """The Mann-Whitney AUC of ``maps`` for ``masks`` pixels over the pixels of ``among``.

    Pixels outside ``among`` are ranked below every map value (at -inf, all tied), so the ranks
    of the pixels inside are their ranks among themselves plus the count outside.
    """
    among = among.flatten(1).bool().to(maps.device)
    values = maps.flatten(1).double().masked_fill(~among, -math.inf)
    ranks = average_ranks(values)
    labels = masks.flatten(1).bool().to(ranks.device) & among
    outside = (~among).sum(dim=1).double()
    positives = labels.sum(dim=1).double()
    negatives = among.sum(dim=1).double() - positives
    rank_sum = (ranks * labels).sum(dim=1) - positives * outside
    auc = (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)
    return torch.where((positives > 0) & (negatives > 0), auc, torch.nan).float()


def average_ranks(values: torch.Tensor) -> torch.Tensor:
    """(B, N) 1-based ranks of each row's values, tied values sharing their mean rank."""
    ordered, order = values.sort(dim=1)
    first = torch.searchsorted(ordered, ordered, right=False)  # ties: first position ...
    last = torch.searchsorted(ordered, ordered, right=True)  # ... and one past the last
    ranks = torch.empty_like(values, dtype=torch.float64)
    return ranks.scatter_(1, order, (first + last + 1).double() / 2)


def mass_share(maps: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
    """(B,) share of each map's positive mass inside ``regions`` (B or 1, H, W); 0 for all-zero."""
    positive = maps.clamp_min(0).flatten(1)
    inside = (positive * regions.flatten(1).to(positive.dtype)).sum(dim=1)
    return inside / positive.sum(dim=1).clamp_min(1e-12)


def _nan_where_empty(values: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    return torch.where(masks.flatten(1).any(dim=1), values.float(), torch.nan)
