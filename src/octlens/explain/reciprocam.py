"""ViT-ReciproCAM (Byun & Lee 2023): gradient-free maps from spatially masked token copies.

At the chosen block, the first norm's output tokens are copied once per patch position ``p``;
each copy keeps the prefix (CLS) tokens and the 3x3 neighbourhood of ``p`` weighted by
``[[1, 2, 1], [2, 4, 2], [1, 2, 1]] / 16``, and zeros every other patch token. The rest of the
block (with the block's own residual input, replicated explicitly for every copy), the later
blocks, the final norm and the head run on all copies in batches; the map at ``p`` is the softmax
probability of the target class for copy ``p``.

Cost: one forward pass plus ``tokens x blocks-after-target / depth`` pass equivalents.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from octlens.explain.base import Explainer, forward_hooks, predicted_unless_given
from octlens.models import vit_parts
from octlens.runtime import PrecisionPlan

_KERNEL = torch.tensor([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]]) / 16


def neighbourhood_weights(grid_h: int, grid_w: int) -> torch.Tensor:
    """(P, P) weights: row p holds the 3x3 kernel centred on patch p, clipped at the edges."""
    weights = torch.zeros(grid_h, grid_w, grid_h, grid_w)
    for i in range(grid_h):
        for j in range(grid_w):
            for di in (-1, 0, 1):
                for dj in (-1, 0, 1):
                    if 0 <= i + di < grid_h and 0 <= j + dj < grid_w:
                        weights[i, j, i + di, j + dj] = _KERNEL[di + 1, dj + 1]
    return weights.reshape(grid_h * grid_w, grid_h * grid_w)


class ViTReciproCAM(Explainer):
    r"""ViT-ReciproCAM (Byun & Lee, 2023): the target probability of spatially masked copies.

    .. math:: L^c(p) = \mathrm{softmax}\big(f_{>b}(M_p \odot \mathrm{norm1}_b(z))\big)_c

    where :math:`M_p` keeps the prefix tokens and the 3x3 neighbourhood of patch ``p``
    (weights ``[[1,2,1],[2,4,2],[1,2,1]]/16``) and :math:`f_{>b}` is the rest of block ``b``,
    the later blocks and the head. Gradient-free; copies of several images run in one batch.

    Args:
        model: a timm ViT (refused otherwise, with a line naming what it lacks).
        block: the block whose normed tokens are masked (default: the last).
        batch_size: masked copies per forward pass.
        precision: ``auto`` (fp32 on CPUs, AMP on CUDA), ``fp32``, ``bf16``, ``fp16``, or a plan.

    Example::

        maps = ViTReciproCAM(vit, batch_size=256)(images).raw   # also "vit-reciprocam"
    """

    vit_only = True
    title = "ViT-ReciproCAM"

    def __init__(
        self,
        model: nn.Module,
        block: int = -1,
        batch_size: int = 128,
        precision: str | PrecisionPlan = "auto",
    ) -> None:
        super().__init__(model, precision)
        self.parts = vit_parts(model, self.title)
        self.block = block % len(self.parts.blocks)
        self.batch_size = batch_size

    @torch.no_grad()
    def _explain(self, images: torch.Tensor, targets: torch.Tensor | None):
        model, block = self.model, self.parts.block(self.block)
        captured: dict[str, torch.Tensor] = {}

        def keep_normed(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            captured["normed"] = output

        def keep_residual(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            captured["residual"] = inputs[0]  # hooks return None: the output stays untouched

        hooks = [(block.norm1, keep_normed), (block, keep_residual)]
        with forward_hooks(hooks):
            targets = predicted_unless_given(model(images), targets)
        normed, residual = captured["normed"], captured["residual"]
        prefix = self.parts.num_prefix_tokens
        grid_h, grid_w = self.parts.grid(images.shape)
        weights = neighbourhood_weights(grid_h, grid_w).to(normed)  # (P, P)
        positions = len(weights)

        # Copy k is image k // P masked around patch k % P; chunks mix images freely.
        copies = torch.arange(len(images) * positions, device=images.device)
        probs = torch.empty(len(copies), device=images.device)
        for chunk in copies.split(self.batch_size):
            image, position = chunk // positions, chunk % positions
            masked = normed[image].clone()
            masked[:, prefix:] = weights[position][:, :, None] * normed[image, prefix:]
            logits = self._finish(block, residual[image], masked)
            probs[chunk] = torch.softmax(logits.float(), dim=1).gather(1, targets[image, None])[
                :, 0
            ]
        return probs.reshape(len(images), grid_h, grid_w), targets

    def _finish(self, block: Any, residual: torch.Tensor, normed: torch.Tensor) -> torch.Tensor:
        """The chosen block from its normed tokens on, then the later blocks and the head."""
        x = residual + block.drop_path1(block.ls1(block.attn(normed)))
        x = x + block.drop_path2(block.ls2(block.mlp(block.norm2(x))))
        for later in self.parts.blocks[self.block + 1 :]:
            x = later(x)
        vit: Any = self.model
        return vit.forward_head(vit.norm(x))
