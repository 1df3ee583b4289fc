"""The regions of a scan that are not anatomy, where a shortcut would sit: the geometry the
confound scan (:mod:`octlens.data.confounds`) and the shortcut audit (:mod:`octlens.audit`)
share.

Regions (B, H, W booleans): **off_retina** (outside the ILM-to-Bruch's membrane mask), the
**border** band (within :data:`BORDER` of the side from any edge), the four **corners** (squares
of side :data:`CORNER` of the image side: where scanners print labels and where the registration
fill and planted marks sit), and the scanner's **fill**.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum

import torch


class Region(StrEnum):
    """A region that is not anatomy. Its value is the name ``audit.json``, the tables and the
    app use, so a stored result keyed by the plain string reads the same."""

    OFF_RETINA = "off_retina"
    BORDER = "border"
    CORNERS = "corners"
    FILL = "fill"


#: Width of the border band, and side of each corner square, as shares of the image side.
BORDER = 1 / 8
CORNER = 1 / 5


def edge_regions(height: int, width: int) -> dict[str, torch.Tensor]:
    """(H, W) masks of the ``border`` band and the four ``corners``."""
    rows = torch.arange(height)[:, None].float()
    cols = torch.arange(width)[None, :].float()

    def near_edge(position: torch.Tensor, size: int, share: float) -> torch.Tensor:
        return (position < share * size) | (position >= (1 - share) * size)

    border = near_edge(rows, height, BORDER) | near_edge(cols, width, BORDER)
    corners = near_edge(rows, height, CORNER) & near_edge(cols, width, CORNER)
    return {Region.BORDER: border, Region.CORNERS: corners}


def region_masks(retina: torch.Tensor, fill: torch.Tensor) -> dict[str, torch.Tensor]:
    """(B, H, W) masks of every audited region, from retina and fill masks (B, H, W)."""
    edges = edge_regions(*retina.shape[-2:])
    return {
        Region.OFF_RETINA: ~retina.bool(),
        Region.BORDER: edges[Region.BORDER].expand_as(retina),
        Region.CORNERS: edges[Region.CORNERS].expand_as(retina),
        Region.FILL: fill.bool(),
    }


def area_shares(regions: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """(B,) share of the image each region covers: what an even map would put there."""
    return {name: mask.flatten(1).float().mean(dim=1) for name, mask in regions.items()}
