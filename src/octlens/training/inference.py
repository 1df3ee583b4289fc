"""Running a classifier over a data loader: shared by validation and evaluation."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from octlens.runtime import PrecisionPlan


def prepare_input(images: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    images = images.to(device, non_blocking=True)
    return images.contiguous(memory_format=torch.channels_last) if channels_last else images


@torch.inference_mode()
def predict_logits(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    precision: PrecisionPlan,
    channels_last: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """All logits (N, C) in fp32 and the second element of each batch (labels, or positions of
    the scans), in order, model in eval mode; (0, 0) and (0,) when no batch had a scan."""
    was_training = model.training
    model.eval()
    logits, labels = [], []
    try:
        for images, targets in batches:
            if len(images) == 0:  # every scan of the batch was unreadable
                continue
            with precision.autocast():
                output = model(prepare_input(images, precision.device, channels_last))
            logits.append(output.float().cpu())
            labels.append(torch.as_tensor(targets))
    finally:
        model.train(was_training)
    if not logits:  # not one scan could be decoded: the caller names them (data.left_out)
        return torch.zeros(0, 0), torch.zeros(0, dtype=torch.long)
    return torch.cat(logits), torch.cat(labels)
