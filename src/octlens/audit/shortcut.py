"""Where attention falls off the retina, and the rule that flags a model as using a shortcut.

The regions of a scan are :mod:`octlens.data.regions`'s (off the retina, the border band, the
corners, the scanner's fill). For each map the audit
reports the share of its positive mass in each region beside the region's share of the area (what
a map spread evenly would get); their ratio is the region's *enrichment*.

**Flag rule** (:func:`shortcut_flags`): a model is flagged as using a shortcut when either

1. a counterfactual region swap (:mod:`octlens.audit.counterfactual`) moves its predictions to
   the donor's class beyond both controls: the evidence that needs no manifest, or
2. on data with planted marks (the manifest), its accuracy on clean scans exceeds its accuracy on
   scans with a misleading mark by :data:`ACCURACY_GAP` or more, or it answers the misleading
   mark's class more often than chance by :data:`FOLLOW_EXCESS` or more. Chance is where its
   clean-scan errors would land on that class, :math:`(1 - a_{clean}) / (K - 1)`: a model that
   learned nothing but the mark is at chance on clean scans too, so its accuracy has little to
   lose, but it follows the mark. Either difference must also have the lower end of its 95%
   bootstrap interval above zero (:func:`mark_effects`): clean and marked test scans are
   different scans, a few dozen of each in an audit, and a model that ignores its mark (the
   calibration's logo ViT) showed a gap of 0.12 between them that shrank to 0.08 [0.00, 0.17]
   when the same scans were compared with and without the mark.

Saliency supports the verdict but never makes it (:func:`attention_notes`): maps at 4 x 4 or
8 x 8 are too coarse to show a small mark, and models that followed a planted mark on every
second scan put no more of their maps in the corners than the corners' area. A note is written
when, for at least half of the methods that pass the sanity check (all methods if none passes),
the mean share of attention in the corners is :data:`CORNER_ENRICHMENT` times the corners' mean
area share or more, or the mean off-retina share is :data:`OFF_RETINA_ENRICHMENT` times the
off-retina area share or more.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from octlens.audit.counterfactual import RESAMPLES, Interval, percentile_interval
from octlens.audit.localization import mass_share
from octlens.data.regions import Region

ACCURACY_GAP = 0.10
FOLLOW_EXCESS = 0.10
CORNER_ENRICHMENT = 2.0
OFF_RETINA_ENRICHMENT = 1.1


def attention_shares(
    maps: torch.Tensor, regions: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """(B,) share of each map's positive mass in each region."""
    return {name: mass_share(maps, mask) for name, mask in regions.items()}


def mark_effects(
    clean: torch.Tensor,
    misleading: torch.Tensor,
    follows: torch.Tensor,
    n_classes: int,
    seed: int = 0,
) -> dict[str, Interval]:
    """The manifest's two differences with their 95% bootstrap intervals: ``gap``, accuracy on
    clean scans minus on scans with a misleading mark, and ``follow_excess``, how much more often
    the misleading mark's class is answered than clean-scan errors would, :math:`(1 - a_{clean})
    / (K - 1)`. ``clean`` (C,) and ``misleading`` (M,) say which scans were answered right,
    ``follows`` (M,) which misleading scans got the mark's class; the two groups are different
    scans, so each is resampled on its own."""
    generator = torch.Generator().manual_seed(seed)
    clean, misleading, follows = (values.double().cpu() for values in (clean, misleading, follows))
    clean_rows = torch.randint(len(clean), (RESAMPLES, len(clean)), generator=generator)
    marked_rows = torch.randint(len(misleading), (RESAMPLES, len(misleading)), generator=generator)
    clean_accuracy = clean[clean_rows].mean(dim=1)

    def by_chance(accuracy: torch.Tensor | float) -> torch.Tensor | float:
        return (1 - accuracy) / (n_classes - 1)

    return {
        "gap": percentile_interval(
            (clean.mean() - misleading.mean()).item(),
            clean_accuracy - misleading[marked_rows].mean(dim=1),
        ),
        "follow_excess": percentile_interval(
            (follows.mean() - by_chance(clean.mean())).item(),
            follows[marked_rows].mean(dim=1) - by_chance(clean_accuracy),
        ),
    }


def shortcut_flags(
    swaps: Mapping[str, str],
    accuracy_gap: Interval | None,
    follow_excess: Interval | None = None,
) -> list[str]:
    """The reasons a model is flagged (empty: not flagged): ``swaps`` maps each region whose swap
    is flagged to the sentence describing it; on data with planted marks ``accuracy_gap`` is the
    clean minus misleading-mark accuracy and ``follow_excess`` how much more often the model
    answers a misleading mark's class than its clean-scan errors would, each with its interval
    (None without marks): each flags at its threshold with the interval's lower end above zero."""
    reasons = list(swaps.values())
    if accuracy_gap is not None and accuracy_gap.mean >= ACCURACY_GAP and accuracy_gap.low > 0:
        reasons.append(
            f"accuracy drops by {accuracy_gap.mean:.2f} [{accuracy_gap.low:.2f}, "
            f"{accuracy_gap.high:.2f}] when scans carry a misleading mark "
            f"(flag at >= {ACCURACY_GAP:.2f}, interval above 0)"
        )
    if follow_excess is not None and follow_excess.mean >= FOLLOW_EXCESS and follow_excess.low > 0:
        reasons.append(
            f"answers a misleading mark's class {follow_excess.mean:.2f} [{follow_excess.low:.2f}, "
            f"{follow_excess.high:.2f}] more often than its errors on clean scans would "
            f"(flag at >= {FOLLOW_EXCESS:.2f}, interval above 0)"
        )
    return reasons


def attention_notes(methods: Mapping[str, Mapping[str, float | bool]]) -> list[str]:
    """What the maps say about the regions (see the module docstring); ``methods`` maps each
    method to its ``sanity_passed`` and the means ``corners``, ``corners_area``, ``off_retina``
    and ``off_retina_area``."""
    notes = []
    trusted = [name for name, m in methods.items() if m["sanity_passed"]] or list(methods)
    for region, limit in (
        (Region.CORNERS, CORNER_ENRICHMENT),
        (Region.OFF_RETINA, OFF_RETINA_ENRICHMENT),
    ):
        high = [
            name
            for name in trusted
            if methods[name][region] >= limit * methods[name][f"{region}_area"]
        ]
        if trusted and 2 * len(high) >= len(trusted):
            notes.append(
                f"{len(high)} of {len(trusted)} methods put >= {limit:g}x the area share of "
                f"attention in the {region.replace('_', '-')} region ({', '.join(high)})"
            )
    return notes
