"""Occlusion sensitivity, the protocol of Kermany et al. (2018) for OCT.

A blank ``window`` x ``window`` box slides over the image with ``stride``; for each position the
target-class probability drop ``p(x) - p(x with the box filled)`` is added to every pixel under the
box, and each pixel's total is divided by the number of boxes that covered it (pixels no box
covers get 0). All occluded copies of all images go through the model in batches.
"""

from __future__ import annotations

import torch
from torch import nn

from octlens.explain.base import Explainer, predicted_unless_given, target_probabilities
from octlens.runtime import PrecisionPlan


class Occlusion(Explainer):
    r"""Occlusion sensitivity (Zeiler & Fergus, 2014; the OCT protocol of Kermany et al., 2018).

    .. math:: L^c(x) = \frac{1}{|W(x)|} \sum_{w \ni x} \big(p^c(I) - p^c(I_{w \to f})\big)

    the drop in the target's softmax probability when a ``window`` square is set to ``fill``,
    averaged over the windows covering each pixel. Model-agnostic and gradient-free; one forward
    pass per window position (batched).

    Args:
        model: any classifier.
        window: side of the occluding square, in input pixels.
        stride: step between window positions.
        fill: the value the window is set to, in the model's input space (0: the mean pixel
            after normalization).
        batch_size: occluded copies per forward pass.
        precision: ``auto`` (fp32 on CPUs, AMP on CUDA), ``fp32``, ``bf16``, ``fp16``, or a plan.

    Example::

        maps = Occlusion(model, window=16, stride=8)(images).raw
    """

    def __init__(
        self,
        model: nn.Module,
        window: int = 20,
        stride: int = 10,
        fill: float = 0.0,
        batch_size: int = 64,
        precision: str | PrecisionPlan = "auto",
    ) -> None:
        super().__init__(model, precision)
        self.window, self.stride, self.fill, self.batch_size = window, stride, fill, batch_size

    @torch.no_grad()
    def _explain(self, images: torch.Tensor, targets: torch.Tensor | None):
        height, width = images.shape[-2:]
        tops = range(0, height - self.window + 1, self.stride)
        lefts = range(0, width - self.window + 1, self.stride)
        boxes = [(top, left) for top in tops for left in lefts]
        logits = self.model(images)
        targets = predicted_unless_given(logits, targets)
        base = target_probabilities(logits, targets)

        drops = torch.zeros(len(images), height, width, device=images.device)
        counts = torch.zeros(height, width, device=images.device)
        for top, left in boxes:
            counts[top : top + self.window, left : left + self.window] += 1
        per_batch = max(1, self.batch_size // len(images))
        for start in range(0, len(boxes), per_batch):
            chunk = boxes[start : start + per_batch]
            occluded = images.repeat(len(chunk), 1, 1, 1)  # (len(chunk) * B, C, H, W)
            for i, (top, left) in enumerate(chunk):
                block = slice(i * len(images), (i + 1) * len(images))
                occluded[block, :, top : top + self.window, left : left + self.window] = self.fill
            probs = target_probabilities(self.model(occluded), targets.repeat(len(chunk)))
            for i, (top, left) in enumerate(chunk):
                drop = base - probs[i * len(images) : (i + 1) * len(images)]
                drops[:, top : top + self.window, left : left + self.window] += drop[:, None, None]
        return drops / counts.clamp_min(1), targets
