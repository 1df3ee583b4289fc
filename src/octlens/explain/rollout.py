"""Attention rollout (Abnar & Zuidema 2020) for timm Vision Transformers.

Per block, the attention probabilities (B, heads, N, N) are fused over heads (mean, max or min),
optionally the lowest ``discard_ratio`` of each row's weights (CLS column kept) set to zero, the
identity added for the residual path, and rows renormalized: ``Â_l = norm(A_l + I)``. The rollout
is ``R = Â_L ... Â_2 Â_1``; the map is the CLS row of ``R`` over the patch tokens (the mean of the
patch rows for models without prefix tokens), reshaped to the patch grid.

timm computes attention inside ``F.scaled_dot_product_attention`` when ``fused_attn`` is on; it is
switched off while explaining (the base class restores it) so that ``attn_drop`` sees, and its hook
records, the probabilities.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn

from octlens.errors import OctlensError
from octlens.explain.base import Explainer, forward_hooks, predicted_unless_given
from octlens.models import vit_parts
from octlens.runtime import PrecisionPlan


def record_attention(model: nn.Module) -> tuple[list[torch.Tensor], list]:
    """Hooks that append each block's attention probabilities to a list, in block order."""
    maps: list[torch.Tensor] = []

    def keep(module: nn.Module, inputs: object, output: torch.Tensor) -> None:
        maps.append(output)

    hooks = []
    block: Any
    for block in vit_parts(model).blocks:
        block.attn.fused_attn = False
        hooks.append((block.attn.attn_drop, keep))
    return maps, hooks


class AttentionRollout(Explainer):
    r"""Attention rollout (Abnar & Zuidema, 2020): attention propagated through the blocks.

    .. math:: \hat A_l = \mathrm{rownorm}\big(\mathrm{fuse}_{heads}(A_l) + I\big),\quad
        R = \hat A_L \cdots \hat A_1,\quad L = R_{\mathrm{CLS},\,patches}

    Class-agnostic: the targets are reported, not used (so it fails the sanity check's head
    randomization by design).

    Args:
        model: a timm ViT (refused otherwise, with a line naming what it lacks).
        head_fusion: ``mean``, ``max`` or ``min`` over the heads.
        discard_ratio: share of each row's lowest weights set to zero (CLS column kept).
        precision: ``auto`` (fp32 on CPUs, AMP on CUDA), ``fp32``, ``bf16``, ``fp16``, or a plan.

    Example::

        maps = AttentionRollout(vit, head_fusion="max", discard_ratio=0.9)(images).raw
    """

    vit_only = True
    title = "attention rollout"

    def __init__(
        self,
        model: nn.Module,
        head_fusion: Literal["mean", "max", "min"] = "mean",
        discard_ratio: float = 0.0,
        precision: str | PrecisionPlan = "auto",
    ) -> None:
        super().__init__(model, precision)
        if head_fusion not in ("mean", "max", "min"):
            raise OctlensError(f"head_fusion must be mean, max or min, not '{head_fusion}'")
        if not 0.0 <= discard_ratio < 1.0:
            raise OctlensError(f"discard_ratio must be in [0, 1), not {discard_ratio}")
        self.head_fusion, self.discard_ratio = head_fusion, discard_ratio

    @torch.no_grad()
    def _explain(self, images: torch.Tensor, targets: torch.Tensor | None):
        """Rollout is class-agnostic: targets are reported, not used."""
        maps, hooks = record_attention(self.model)
        with forward_hooks(hooks):
            targets = predicted_unless_given(self.model(images), targets)
        rollout = torch.zeros(0)
        for attention in maps:
            fused = getattr(attention.float(), self.head_fusion)(dim=1)
            if self.head_fusion != "mean":
                fused = fused.values
            fused = self._discard(fused)
            eye = torch.eye(fused.shape[-1], device=fused.device)
            step = fused + eye
            step = step / step.sum(dim=-1, keepdim=True)
            rollout = step if rollout.numel() == 0 else step @ rollout
        parts = vit_parts(self.model)
        prefix = parts.num_prefix_tokens
        # The CLS row says what the classifier's token gathered; without one, average the rows.
        relevance = rollout[:, 0, prefix:] if prefix else rollout.mean(dim=1)
        return relevance.reshape(len(images), *parts.grid(images.shape)), targets

    def _discard(self, fused: torch.Tensor) -> torch.Tensor:
        if self.discard_ratio == 0:
            return fused
        n = fused.shape[-1]
        k = int(self.discard_ratio * n)
        lowest = fused.topk(k, dim=-1, largest=False).indices
        kept = fused.clone()
        kept.scatter_(-1, lowest, 0.0)
        kept[..., 0] = fused[..., 0]  # the CLS column is never discarded
        return kept
