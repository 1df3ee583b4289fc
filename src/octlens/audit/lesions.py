"""Do the maps find the lesion, or only the retina it lies in?

Every method's maps are scored against the lesion masks (:mod:`octlens.audit.localization`), and
so are three maps that never looked at the model: random maps and the two retina priors
(:mod:`octlens.audit.priors`). A method is credited with finding lesions on a score only where it
beats the stronger prior on it, paired over the scans whose maps explain the lesion's class (those
the model predicts as their own class), with a 95% bootstrap interval above zero, and only on at
least :data:`~octlens.audit.result.MIN_CREDITED_SCANS` such scans.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from octlens.audit.counterfactual import Interval, interval
from octlens.audit.localization import (
    energy_in_mask,
    pixel_auroc,
    pointing_game,
    within_retina_auroc,
)
from octlens.audit.priors import (
    PRIORS,
    RANDOM,
    RETINA,
    THICKEST,
    retina_prior,
    thickest_retina_prior,
)
from octlens.audit.result import MIN_CREDITED_SCANS, LocalizationSummary
from octlens.audit.scores import BEYOND_RETINA, LOCALIZATION, Score, group_means

#: The group of scans on which methods are credited.
LESION_PREDICTED = "lesion_predicted"


def localization_scores(
    maps: torch.Tensor, lesions: torch.Tensor, retina: torch.Tensor
) -> dict[str, torch.Tensor]:
    """(N,) per score of :data:`~octlens.audit.scores.LOCALIZATION`; NaN without a lesion."""
    return {
        Score.POINTING_GAME: pointing_game(maps, lesions),
        Score.ENERGY_IN_LESION: energy_in_mask(maps, lesions),
        Score.PIXEL_AUROC: pixel_auroc(maps, lesions),
        Score.WITHIN_RETINA_AUROC: within_retina_auroc(maps, lesions, retina),
    }


def localization_summary(
    methods: Mapping[str, Mapping[str, torch.Tensor]],
    random: torch.Tensor,
    lesions: torch.Tensor,
    retina: torch.Tensor,
    annotated: torch.Tensor,
    lesion_predicted: torch.Tensor,
) -> LocalizationSummary:
    """The reference maps' scores and each method's gap to the stronger prior.

    ``methods`` holds each method's per-scan scores (:func:`localization_scores` among them);
    ``random`` the random maps (N, H, W) the faithfulness reference used; ``lesion_predicted``
    (N,) the scans with a lesion the model predicts as their class.
    """
    with_lesion = lesions.flatten(1).any(dim=1) & annotated
    references = {
        RANDOM: random,
        RETINA: retina_prior(retina),
        THICKEST: thickest_retina_prior(retina),
    }
    groups = {"all": with_lesion, LESION_PREDICTED: lesion_predicted & with_lesion}
    per_scan = {
        name: localization_scores(maps, lesions, retina) for name, maps in references.items()
    }
    means = {name: group_means(scores, groups) for name, scores in per_scan.items()}
    credited_on = groups[LESION_PREDICTED]
    basis = LESION_PREDICTED if credited_on.any() else "all"
    stronger: dict[str, str] = {
        score: max(PRIORS, key=lambda prior: means[prior][basis][score] or 0.0)
        for score in LOCALIZATION
    }
    beyond: dict[str, dict[str, Interval]] = {}
    for name, scores in methods.items():
        gaps = {
            score: _paired_gap(scores[score], per_scan[stronger[score]][score], credited_on)
            for score in BEYOND_RETINA
        }
        # a score no scan defines (every lesion off the estimated retina) is left out alone
        beyond[name] = {score: interval(gap) for score, gap in gaps.items() if len(gap)}
    return LocalizationSummary(
        min_scans=MIN_CREDITED_SCANS,
        n_annotated=int(annotated.sum()),
        n_with_lesion=int(with_lesion.sum()),
        n_lesion_predicted=int(credited_on.sum()),
        references=means,
        stronger_prior=stronger,
        beyond_prior=beyond,
    )


def _paired_gap(method: torch.Tensor, prior: torch.Tensor, scans: torch.Tensor) -> torch.Tensor:
    """Method minus prior on ``scans``, leaving out a scan either is undefined on (a lesion
    wholly outside the retina mask has no within-retina AUROC)."""
    gap = (method - prior)[scans]
    return gap[~gap.isnan()]
