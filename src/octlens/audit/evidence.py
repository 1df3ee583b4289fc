"""The counterfactual tests of :mod:`octlens.audit.counterfactual`, run on a prepared audit: the
evidence that leads the shortcut verdict, with no manifest needed.

Every scan gets :data:`DONORS` donors of another predicted class (and as many of its own class for
the control) for each swapped region, so the swaps cost ``3 * DONORS`` forward passes per scan and
region; region-only two more, the aspect test one per width plus one for its baseline.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import torch

from octlens.audit.counterfactual import (
    Interval,
    Predict,
    choose_donors,
    interval,
    reacquired,
    region_only,
    region_swap,
)
from octlens.audit.result import CounterfactualSummary
from octlens.data.regions import Region

DONORS = 4
#: The widths OCT2017 scans come in (496 px high), tested besides those seen in the data.
OCT_WIDTHS = (512, 768, 1536)
SWAP_REGIONS: tuple[str, ...] = (Region.CORNERS, Region.BORDER, Region.FILL, Region.OFF_RETINA)


@dataclass(frozen=True)
class ScansUnderTest:
    """What the counterfactual tests need to know of the audited scans, and nothing of the audit
    around them. Tensors are on the model's device; masks are at the model's input size."""

    predict: Predict  # (B, 1, S, S) normalized images -> (B, K) class probabilities
    images: torch.Tensor  # (N, 1, S, S) normalized
    labels: torch.Tensor  # (N,)
    predictions: torch.Tensor  # (N,) the predicted classes, which choose each scan's donors
    retina: torch.Tensor  # (N, S, S) bool
    fill: torch.Tensor  # (N, S, S) bool: the scanner's fill, never texture for region-only
    overlay: torch.Tensor  # (N, S, S) bool: burned-in marks, moved whole by a swap
    regions: Mapping[str, torch.Tensor]  # region name -> (N, S, S) bool, the swapped regions


@dataclass(frozen=True)
class StoredScans:
    """The same scans as stored, for the aspect test, which re-acquires them at other widths."""

    widths: frozenset[int]  # the widths the scans come in
    chunks: Callable[[], Iterable[list[np.ndarray]]]  # re-read, a bounded chunk at a time
    to_input: Callable[[np.ndarray], torch.Tensor]  # a stored scan -> (1, S, S) model input


def counterfactual_evidence(
    scans: ScansUnderTest, stored: StoredScans, donors: int = DONORS, seed: int = 0
) -> CounterfactualSummary:
    """Region swaps, region-only accuracy and the aspect test on the audited scans."""
    other = choose_donors(scans.predictions, donors, same_class=False, seed=seed)
    same = choose_donors(scans.predictions, donors, same_class=True, seed=seed + 1)
    unchanged = scans.predict(scans.images)  # shared by the four swaps
    swaps = {
        region: region_swap(
            scans.predict,
            scans.images,
            scans.regions[region],
            scans.retina,
            other,
            same,
            seed,
            unchanged,
            scans.overlay,
        )
        for region in SWAP_REGIONS
    }
    only = region_only(
        scans.predict, scans.images, scans.labels, scans.retina, scans.fill, seed, scans.overlay
    )
    counts = Counter(scans.labels.tolist())
    return CounterfactualSummary(
        donors_per_scan=donors,
        chance=max(counts.values()) / len(scans.labels),
        swaps=swaps,
        region_only=only,
        aspect=aspect_changes(scans.predict, stored, seed),
    )


def aspect_changes(predict: Predict, stored: StoredScans, seed: int = 0) -> dict[str, Interval]:
    """Per width: the share of scans of another width whose prediction changes when presented
    as if acquired at that width. Scans are re-read a chunk at a time, so memory stays bounded."""
    widths = sorted(stored.widths | set(OCT_WIDTHS))
    changed: dict[int, list[torch.Tensor]] = {width: [] for width in widths}

    def predicted(arrays: list[np.ndarray]) -> torch.Tensor:
        return predict(torch.stack([stored.to_input(array) for array in arrays])).argmax(1).cpu()

    for originals in stored.chunks():
        # the baseline goes the same way (full decode, then resize) as the re-acquired scans
        baseline = predicted(originals)
        for width in widths:
            others = [j for j, pixels in enumerate(originals) if pixels.shape[1] != width]
            if others:
                moved = predicted([reacquired(originals[j], width) for j in others])
                changed[width].append(moved != baseline[others])
    return {
        str(width): interval(torch.cat(flags).double(), seed)
        for width, flags in changed.items()
        if flags
    }
