"""LeGrad (Bousselham et al. 2024): gradients of per-layer class scores w.r.t. attention.

For each of the last ``num_blocks`` blocks ``l`` of a timm ViT, with ``z_l`` the block's output
tokens and ``A_l`` its post-softmax attention (B, heads, N, N):

    s_l = head(norm(mean_tokens(z_l)))[target]
    E_l = mean over heads and query rows of ReLU(ds_l / dA_l)       -> (B, N)

the map is the mean of ``E_l`` over the blocks, at the patch keys, on the patch grid. One forward
pass and one short backward per block (from ``s_l`` to ``A_l`` crosses only block ``l``'s tail).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from octlens.errors import OctlensError
from octlens.explain.base import Explainer, forward_hooks, predicted_unless_given
from octlens.explain.rollout import record_attention
from octlens.models import vit_parts
from octlens.runtime import PrecisionPlan


class LeGrad(Explainer):
    r"""LeGrad (Bousselham et al., 2024): positive gradients of per-block scores w.r.t. attention.

    .. math:: s_l = \mathrm{head}(\mathrm{norm}(\overline{z_l}))_c,\quad
        E_l = \mathrm{mean}_{heads,\,queries}\,\mathrm{ReLU}\Big(
        \frac{\partial s_l}{\partial A_l}\Big),\quad
        L = \frac{1}{n}\sum_{l > L - n} E_l[\mathrm{patches}]

    Args:
        model: a timm ViT (refused otherwise, with a line naming what it lacks).
        num_blocks: the last ``n`` blocks averaged (default: all).
        precision: ``auto`` (fp32 on CPUs, AMP on CUDA), ``fp32``, ``bf16``, ``fp16``, or a plan.

    Example::

        maps = LeGrad(vit, num_blocks=4)(images).normalized
    """

    vit_only = True
    title = "LeGrad"

    def __init__(
        self,
        model: nn.Module,
        num_blocks: int | None = None,
        precision: str | PrecisionPlan = "auto",
    ) -> None:
        super().__init__(model, precision)
        self.parts = vit_parts(model, self.title)
        depth = len(self.parts.blocks)
        self.num_blocks = depth if num_blocks is None else num_blocks
        if not 1 <= self.num_blocks <= depth:
            raise OctlensError(f"num_blocks must be 1 to {depth}, not {num_blocks}")

    def _explain(self, images: torch.Tensor, targets: torch.Tensor | None):
        model: Any = self.model  # timm's norm, fc_norm and head
        attentions, hooks = record_attention(model)
        outputs: list[torch.Tensor] = []
        hooks += [(block, lambda m, i, out: outputs.append(out)) for block in self.parts.blocks]
        with torch.enable_grad(), forward_hooks(hooks):
            # Inputs that need a gradient make every attention map part of the graph, even when
            # the model's own parameters are frozen.
            targets = predicted_unless_given(model(images.detach().requires_grad_()), targets)
            first = len(self.parts.blocks) - self.num_blocks
            relevance = torch.zeros(())
            for attention, tokens in zip(attentions[first:], outputs[first:], strict=True):
                pooled = model.norm(tokens.mean(dim=1))
                scores = model.head(model.fc_norm(pooled)).gather(1, targets[:, None])
                (gradient,) = torch.autograd.grad(scores.sum(), attention, retain_graph=True)
                relevance = relevance + torch.relu(gradient).mean(dim=(1, 2))
        relevance = relevance[:, self.parts.num_prefix_tokens :] / self.num_blocks
        return relevance.reshape(len(images), *self.parts.grid(images.shape)).detach(), targets
