"""Where attention falls off the retina, and the rule that flags a model as using a shortcut.

Regions of a scan (B, H, W booleans): **off-retina** (outside the ILM-to-Bruch's membrane mask),
the **border** band (within :data:`BORDER` of the side from any edge), the four **corners**
(squares of side :data:`CORNER` of the image side: where scanners print labels and where the
registration fill and the planted mark sit), and the scanner's **fill**. For each map the audit
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
   lose, but it follows the mark.

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

from octlens.audit.localization import mass_share

#: Width of the border band, and side of each corner square, as shares of the image side.
BORDER = 1 / 8
CORNER = 1 / 5
ACCURACY_GAP = 0.10
FOLLOW_EXCESS = 0.10
CORNER_ENRICHMENT = 2.0
OFF_RETINA_ENRICHMENT = 1.1


def edge_regions(height: int, width: int) -> dict[str, torch.Tensor]:
    """(H, W) masks of the ``border`` band and the four ``corners``."""
    rows = torch.arange(height)[:, None].float()
    cols = torch.arange(width)[None, :].float()

    def near_edge(position: torch.Tensor, size: int, share: float) -> torch.Tensor:
        return (position < share * size) | (position >= (1 - share) * size)

    border = near_edge(rows, height, BORDER) | near_edge(cols, width, BORDER)
    corners = near_edge(rows, height, CORNER) & near_edge(cols, width, CORNER)
    return {"border": border, "corners": corners}


def region_masks(retina: torch.Tensor, fill: torch.Tensor) -> dict[str, torch.Tensor]:
    """(B, H, W) masks of every audited region, from retina and fill masks (B, H, W)."""
    edges = edge_regions(*retina.shape[-2:])
    return {
        "off_retina": ~retina.bool(),
        "border": edges["border"].expand_as(retina),
        "corners": edges["corners"].expand_as(retina),
        "fill": fill.bool(),
    }


def attention_shares(
    maps: torch.Tensor, regions: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """(B,) share of each map's positive mass in each region."""
    return {name: mass_share(maps, mask) for name, mask in regions.items()}


def area_shares(regions: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """(B,) share of the image each region covers: what an even map would put there."""
    return {name: mask.flatten(1).float().mean(dim=1) for name, mask in regions.items()}


def shortcut_flags(
    swaps: Mapping[str, str], accuracy_gap: float | None, follow_excess: float | None = None
) -> list[str]:
    """The reasons a model is flagged (empty: not flagged): ``swaps`` maps each region whose swap
    is flagged to the sentence describing it; on data with planted marks ``accuracy_gap`` is the
    clean minus misleading-mark accuracy and ``follow_excess`` how much more often the model
    answers a misleading mark's class than its clean-scan errors would (None without marks)."""
    reasons = list(swaps.values())
    if accuracy_gap is not None and accuracy_gap >= ACCURACY_GAP:
        reasons.append(
            f"accuracy drops by {accuracy_gap:.2f} when scans carry a misleading mark "
            f"(flag at >= {ACCURACY_GAP:.2f})"
        )
    if follow_excess is not None and follow_excess >= FOLLOW_EXCESS:
        reasons.append(
            f"answers a misleading mark's class {follow_excess:.2f} more often than its errors on "
            f"clean scans would (flag at >= {FOLLOW_EXCESS:.2f})"
        )
    return reasons


def attention_notes(methods: Mapping[str, Mapping[str, float | bool]]) -> list[str]:
    """What the maps say about the regions (see the module docstring); ``methods`` maps each
    method to its ``sanity_passed`` and the means ``corners``, ``corners_area``, ``off_retina``
    and ``off_retina_area``."""
    notes = []
    trusted = [name for name, m in methods.items() if m["sanity_passed"]] or list(methods)
    for region, limit in (("corners", CORNER_ENRICHMENT), ("off_retina", OFF_RETINA_ENRICHMENT)):
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
