"""Where explainers look inside a model: default target layers and ViT token grids."""

from __future__ import annotations

import torch
from torch import nn

from octlens.errors import OctlensError
from octlens.models import is_vit


def resolve_layer(model: nn.Module, layer: nn.Module | str | None) -> nn.Module:
    """A module given directly, by dotted name, or the default for the architecture.

    Defaults: for timm ViTs the last block's ``norm1`` output (the tokens the final attention
    reads; the final norm's output gets no gradient from the patch tokens when the head reads
    only the CLS token); for CNNs the last feature stage that timm's ``feature_info`` lists.
    """
    if isinstance(layer, nn.Module):
        return layer
    if isinstance(layer, str):
        try:
            return model.get_submodule(layer)
        except AttributeError:
            raise OctlensError(f"the model has no layer named '{layer}'") from None
    if is_vit(model):
        return model.blocks[-1].norm1
    feature_info = getattr(model, "feature_info", None)
    if feature_info:
        return model.get_submodule(feature_info[-1]["module"])
    raise OctlensError(f"no default target layer for {type(model).__name__}; pass one")


def tokens_to_grid(tokens: torch.Tensor, model: nn.Module, image_size: tuple[int, int]):
    """ViT tokens (B, N, C) -> patch feature map (B, C, h, w), prefix (CLS) tokens dropped."""
    patch_h, patch_w = model.patch_embed.patch_size
    grid_h, grid_w = image_size[0] // patch_h, image_size[1] // patch_w
    patches = tokens[:, model.num_prefix_tokens :]
    if patches.shape[1] != grid_h * grid_w:
        raise OctlensError(f"{patches.shape[1]} patch tokens do not fill a {grid_h}x{grid_w} grid")
    return patches.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], grid_h, grid_w)
