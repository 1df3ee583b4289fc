"""The names of the scores the audit measures on a method's maps, and which way each is better.

Each direction is declared once, here (as Quantus declares a metric's ``score_direction``): the
best-method choice weighs the faithfulness scores by it, and both audit tables (terminal and
HTML) mark each column's heading with it, so a reader never has to remember whether a small
deletion AUC is good news.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from enum import StrEnum

import torch

from octlens.data.regions import Region


class Score(StrEnum):
    """A per-scan score of a method's maps, by the name ``audit.json`` stores it under."""

    DELETION_AUC = "deletion_auc"  # the class probability as the top pixels are removed
    INSERTION_AUC = "insertion_auc"  # ... as they are added to a blurred scan
    AVERAGE_DROP = "average_drop"  # the probability lost when only the map's pixels are kept
    INCREASE = "increase"  # whether it rose instead
    POINTING_GAME = "pointing_game"  # the map's peak inside the lesion
    ENERGY_IN_LESION = "energy_in_lesion"  # the map's share inside the lesion
    PIXEL_AUROC = "pixel_auroc"  # the map ranking lesion pixels above the others
    WITHIN_RETINA_AUROC = "within_retina_auroc"  # ... above the other retina pixels


#: Whether a higher value is better, for every score and every region's attention share (a map
#: should spend little attention off the retina, in the corners, the border band or the fill).
HIGHER_IS_BETTER: Mapping[str, bool] = {
    Score.DELETION_AUC: False,
    Score.INSERTION_AUC: True,
    Score.AVERAGE_DROP: False,
    Score.INCREASE: True,
    Score.POINTING_GAME: True,
    Score.ENERGY_IN_LESION: True,
    Score.PIXEL_AUROC: True,
    Score.WITHIN_RETINA_AUROC: True,
    **{region: False for region in Region},
}

#: The scores the best method is chosen by: faithfulness, which every scan has (localization
#: needs lesion masks), and which no method can game by being blurrier or sharper alone.
FAITHFULNESS: tuple[Score, ...] = (Score.INSERTION_AUC, Score.DELETION_AUC)

#: The scores that send perturbed copies of the scans through the model: measured on the audit's
#: faithfulness sample, each with a bootstrap interval over it.
PERTURBATION: tuple[Score, ...] = (
    Score.DELETION_AUC,
    Score.INSERTION_AUC,
    Score.AVERAGE_DROP,
    Score.INCREASE,
)

#: The scores of a map against lesion masks.
LOCALIZATION: tuple[Score, ...] = (
    Score.POINTING_GAME,
    Score.ENERGY_IN_LESION,
    Score.PIXEL_AUROC,
    Score.WITHIN_RETINA_AUROC,
)
#: Those a method must beat the stronger retina prior on to be credited with finding lesions
#: (the whole-image pixel AUROC mostly measures finding the retina, so it credits nothing).
BEYOND_RETINA: tuple[Score, ...] = (
    Score.WITHIN_RETINA_AUROC,
    Score.ENERGY_IN_LESION,
    Score.POINTING_GAME,
)


def oriented(score: str, value: float) -> float:
    """``value`` turned so that higher is better (a lower-is-better score negated)."""
    return value if HIGHER_IS_BETTER[score] else -value


def direction_mark(score: str) -> str:
    """The arrow a table heading carries: ``↑`` where higher is better, ``↓`` where lower is."""
    return "\u2191" if HIGHER_IS_BETTER[score] else "\u2193"


def group_means(
    scores: Mapping[str, torch.Tensor], groups: Mapping[str, torch.Tensor]
) -> dict[str, dict[str, float | None]]:
    """``means[group][score]``: each per-scan score (N,) averaged over each group's scans (N,)
    bool, skipping NaN (localization on a scan without a lesion); None where nothing is left."""
    return {
        group: {
            name: _nan_mean(values[members.to(values.device)]) for name, values in scores.items()
        }
        for group, members in groups.items()
    }


def _nan_mean(values: torch.Tensor) -> float | None:
    value = values.nanmean().item() if len(values) else math.nan
    return None if math.isnan(value) else value
