"""Loading pretrained weights from a local file into a timm model with 1-channel input.

A weights file in timm's key layout, or torchvision's (ResNets share timm's names; ViTs are
renamed here), is adapted the way timm adapts its own hub weights: the first convolution or patch
embedding is summed over its RGB inputs (``adapt_input_conv``), position embeddings and patch
kernels are resampled by the architecture's own checkpoint filter, and a classifier whose shape
does not match the new class count is left freshly initialized.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import torch
from timm.models import adapt_input_conv
from timm.models import load_state_dict as timm_load_state_dict
from torch import nn

from octlens.errors import OctlensError


def load_pretrained_file(model: nn.Module, path: str | Path) -> list[str]:
    """Load ``path`` into ``model`` in place; return the keys left at their initial values.

    Safetensors files are read directly; ``.pth`` files only with ``weights_only=True``, so no
    arbitrary code in a pickle is ever run. Keys that fit nowhere are an error: they mean the file
    belongs to another architecture.
    """
    path = Path(path)
    if not path.is_file():
        raise OctlensError(f"{path}: no such weights file")
    try:
        state_dict = timm_load_state_dict(str(path), use_ema=False, weights_only=True)
    except Exception as error:  # torch and safetensors raise many types for a bad file
        raise OctlensError(f"{path}: not a readable weights file ({error})") from None
    return load_pretrained_state(model, _from_torchvision_vit(state_dict), path)


def load_pretrained_state(
    model: nn.Module, state_dict: dict[str, torch.Tensor], source: str | Path
) -> list[str]:
    """Load weights in timm's layout into ``model``, adapted as the module docstring says;
    return the keys left at their initial values (a new classifier). ``source`` names the
    weights in errors."""
    config: dict[str, Any] = model.pretrained_cfg  # type: ignore[assignment]  # timm's dict
    own = model.state_dict()
    first_conv: str | None = f"{config['first_conv']}.weight"
    if first_conv not in own:  # a stem of octlens's own (stem=conv): its first convolution
        first_conv = next((key for key, value in own.items() if value.dim() == 4), None)
    if first_conv in state_dict and first_conv in own:
        in_chans = own[first_conv].shape[1]
        if state_dict[first_conv].shape[1] != in_chans:
            state_dict[first_conv] = adapt_input_conv(in_chans, state_dict[first_conv])
    checkpoint_filter = getattr(sys.modules[type(model).__module__], "checkpoint_filter_fn", None)
    if checkpoint_filter is not None:
        state_dict = checkpoint_filter(state_dict, model)

    for key in [k for k in state_dict if k in own and state_dict[k].shape != own[k].shape]:
        if not is_classifier(model, key):
            raise OctlensError(
                f"{source}: '{key}' has shape {tuple(state_dict[key].shape)}, the model expects "
                f"{tuple(own[key].shape)} (weights of another model size?)"
            )
        del state_dict[key]  # a new head for the new classes
    result = model.load_state_dict(state_dict, strict=False)
    if result.unexpected_keys:
        shown = ", ".join(result.unexpected_keys[:3])
        raise OctlensError(
            f"{source}: {len(result.unexpected_keys)} weights do not belong to this model "
            f"({shown}, ...): weights of another architecture?"
        )
    body_missing = [k for k in result.missing_keys if not is_classifier(model, k)]
    if body_missing:
        raise OctlensError(
            f"{source}: {len(body_missing)} model weights are missing from the file "
            f"({', '.join(body_missing[:3])}, ...)"
        )
    return list(result.missing_keys)


def is_classifier(model: nn.Module, key: str) -> bool:
    """Whether parameter ``key`` belongs to the model's classifier (timm's ``classifier``)."""
    classifier = model.pretrained_cfg["classifier"]  # type: ignore[index]  # timm's dict
    names = (classifier,) if isinstance(classifier, str) else classifier
    return any(key.startswith(f"{name}.") for name in names)


_TORCHVISION_VIT_RENAMES = (
    (r"^class_token$", "cls_token"),
    (r"^conv_proj\.", "patch_embed.proj."),
    (r"^encoder\.pos_embedding$", "pos_embed"),
    (r"^encoder\.ln\.", "norm."),
    (r"^heads\.head\.", "head."),
    (r"^encoder\.layers\.encoder_layer_(\d+)\.ln_1\.", r"blocks.\1.norm1."),
    (r"^encoder\.layers\.encoder_layer_(\d+)\.ln_2\.", r"blocks.\1.norm2."),
    (r"^encoder\.layers\.encoder_layer_(\d+)\.self_attention\.in_proj_", r"blocks.\1.attn.qkv."),
    (r"^encoder\.layers\.encoder_layer_(\d+)\.self_attention\.out_proj\.", r"blocks.\1.attn.proj."),
    (r"^encoder\.layers\.encoder_layer_(\d+)\.mlp\.0\.", r"blocks.\1.mlp.fc1."),
    (r"^encoder\.layers\.encoder_layer_(\d+)\.mlp\.3\.", r"blocks.\1.mlp.fc2."),
)


def _from_torchvision_vit(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename torchvision ``VisionTransformer`` keys to timm's; other layouts pass unchanged.

    Both pack q, k and v into one projection in the same order, so only names change.
    """
    if "conv_proj.weight" not in state_dict:
        return state_dict
    renamed = {}
    for key, tensor in state_dict.items():
        for pattern, replacement in _TORCHVISION_VIT_RENAMES:
            key = re.sub(pattern, replacement, key)
        renamed[key] = tensor
    return renamed
