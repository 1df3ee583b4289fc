"""A convolutional stem for ViTs: early convolutions instead of one big patchify layer.

A ViT's patch embedding is one linear map per 16 x 16 patch, so a drusen bump a few pixels wide
must be learned separately at every offset inside the patch; trained from scratch on a few
hundred scans, ViTs sit at chance for many epochs. Xiao et al. (*Early convolutions help
transformers see better*, NeurIPS 2021) replace it with a few stride-2 3x3 convolutions (BatchNorm,
ReLU) and a 1x1 projection: the same token grid, a few percent of the compute, and training that
is faster and much less sensitive to its settings. Everything after the stem is the ViT, so the
ViT explainers read the model as before (the tokens still form the patch grid).

``--model-arg stem=conv`` selects it (see :func:`octlens.models.create_model`).
"""

from __future__ import annotations

import math
from typing import Any

from timm.layers import PatchEmbed
from torch import nn

STEMS = ("patch", "conv")


class ConvStemEmbed(PatchEmbed):
    """timm's ``PatchEmbed`` (its grid, size checks and output format) with ``proj`` made a
    stack of ``log2(patch_size)`` stride-2 3x3 convolutions, widths doubling up to ``embed_dim``
    (24, 48, 96, 192 for ViT-tiny at patch 16, as Xiao et al.), then a 1x1 convolution."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        height, width = self.patch_size
        steps = int(math.log2(height)) if height == width else -1
        if steps < 1 or 2**steps != height:
            raise ValueError(f"stem=conv needs a square power-of-two patch size, not {height}")
        in_chans = self.proj.in_channels
        embed_dim = self.proj.out_channels
        layers: list[nn.Module] = []
        for step in range(steps):
            out = max(8, embed_dim // 2 ** (steps - 1 - step))
            layers += [
                nn.Conv2d(in_chans, out, 3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(out),
                nn.ReLU(inplace=True),
            ]
            in_chans = out
        layers.append(nn.Conv2d(in_chans, embed_dim, 1))
        self.proj = nn.Sequential(*layers)  # type: ignore[assignment]
