"""Where explainers look inside a model: default target layers and ViT token grids."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from octlens.errors import OctlensError
from octlens.models import is_vit, vit_parts


def resolve_layer(model: nn.Module, layer: nn.Module | str | None) -> nn.Module:
    """A module given directly, by dotted name, or the default for the architecture.

    Defaults: for timm ViTs the last block's ``norm1`` output (the tokens the final attention
    reads; the final norm's output gets no gradient from the patch tokens when the head reads
    only the CLS token); for CNNs the last feature stage that timm's ``feature_info`` lists.
    """
    if isinstance(layer, nn.Module):
        return layer
    if isinstance(layer, str):
        if not layer.strip():
            raise OctlensError("the layer name is empty: name a module, such as layer3")
        try:
            return model.get_submodule(layer)
        except AttributeError:
            raise OctlensError(f"the model has no layer named '{layer}'") from None
    return default_layers(model, 1)[0]


def default_layers(model: nn.Module, count: int) -> list[nn.Module]:
    """The last ``count`` feature stages of a CNN (timm's ``feature_info``), or the ``norm1`` of
    a ViT's last ``count`` blocks (all of them, if it has fewer), in forward order."""
    if is_vit(model):
        parts = vit_parts(model)
        depth = len(parts.blocks)
        return [parts.block(index).norm1 for index in range(-min(count, depth), 0)]
    feature_info = getattr(model, "feature_info", None)
    if not feature_info or len(feature_info) < count:
        raise OctlensError(
            f"{type(model).__name__} lists no {count} feature stage(s) to explain; pass the "
            "layer(s) by name"
        )
    return [model.get_submodule(info["module"]) for info in feature_info[-count:]]


def tokens_to_grid(
    tokens: torch.Tensor, model: nn.Module, image_size: Sequence[int]
) -> torch.Tensor:
    """ViT tokens (B, N, C) -> patch feature map (B, C, h, w), prefix (CLS) tokens dropped."""
    parts = vit_parts(model)
    grid_h, grid_w = parts.grid(image_size)
    patches = tokens[:, parts.num_prefix_tokens :]
    if patches.shape[1] != grid_h * grid_w:
        raise OctlensError(f"{patches.shape[1]} patch tokens do not fill a {grid_h}x{grid_w} grid")
    return patches.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], grid_h, grid_w)
