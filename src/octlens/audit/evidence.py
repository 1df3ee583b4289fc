"""The counterfactual tests of :mod:`octlens.audit.counterfactual`, run on a prepared audit: the
evidence that leads the shortcut verdict, with no manifest needed.

Every scan gets :data:`DONORS` donors of another predicted class (and as many of its own class for
the control) for each swapped region, so the swaps cost ``3 * DONORS`` forward passes per scan and
region; region-only two more, the aspect test one per width plus one for its baseline.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image

from octlens.audit.counterfactual import (
    Interval,
    choose_donors,
    interval,
    reacquired,
    region_only,
    region_swap,
)
from octlens.audit.result import CounterfactualSummary
from octlens.data.regions import Region

if TYPE_CHECKING:
    from octlens.audit.pipeline import PreparedAudit

DONORS = 4
#: The widths OCT2017 scans come in (496 px high), tested besides those seen in the data.
OCT_WIDTHS = (512, 768, 1536)
SWAP_REGIONS: tuple[str, ...] = (Region.CORNERS, Region.BORDER, Region.FILL, Region.OFF_RETINA)


def counterfactual_evidence(
    audit: PreparedAudit, donors: int = DONORS, seed: int = 0
) -> CounterfactualSummary:
    """Region swaps, region-only accuracy and the aspect test on the audit's scans."""
    device = audit.plan.device
    retina, fill = audit.batch.retina.to(device), audit.batch.fill.to(device)
    overlay = audit.batch.overlay.to(device)
    other = choose_donors(audit.predictions, donors, same_class=False, seed=seed)
    same = choose_donors(audit.predictions, donors, same_class=True, seed=seed + 1)
    unchanged = audit.predict(audit.images)  # shared by the four swaps
    swaps = {
        region: region_swap(
            audit.predict,
            audit.images,
            audit.regions[region].to(device),
            retina,
            other,
            same,
            seed,
            unchanged,
            overlay,
        )
        for region in SWAP_REGIONS
    }
    only = region_only(audit.predict, audit.images, audit.labels, retina, fill, seed, overlay)
    counts = Counter(audit.labels.tolist())
    return CounterfactualSummary(
        donors_per_scan=donors,
        chance=max(counts.values()) / len(audit.labels),
        swaps=swaps,
        region_only=only,
        aspect=aspect_changes(audit, seed),
    )


def aspect_changes(audit: PreparedAudit, seed: int = 0) -> dict[str, Interval]:
    """Per width: the share of scans of another width whose prediction changes when presented
    as if acquired at that width. Scans are re-read a batch at a time, so memory stays bounded."""
    samples = audit.batch.samples
    widths = sorted({width for _, width in audit.batch.sizes} | set(OCT_WIDTHS))
    transform = audit.run.eval_transform()
    changed: dict[int, list[torch.Tensor]] = {width: [] for width in widths}
    positions = torch.arange(len(samples))

    def predicted(arrays: list[np.ndarray]) -> torch.Tensor:
        images = torch.stack([transform(Image.fromarray(array)) for array in arrays])
        return audit.predict(images.to(audit.plan.device)).argmax(dim=1).cpu()

    for chunk in positions.split(audit.batch_size):
        originals = [np.asarray(audit.index.load(samples[i])) for i in chunk.tolist()]
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
