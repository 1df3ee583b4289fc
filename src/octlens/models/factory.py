"""Building classifiers by name: one registry of short names over timm's own.

``resnet18``, ``resnet50``, ``vit_tiny``, ``vit_small`` and ``vit_base`` are octlens names; any
other timm model name passes through unchanged. ViTs take any ``img_size`` and ``patch_size``;
``model_kwargs`` reach the timm constructor (``depth``, ``embed_dim``, ``num_heads``, ...), so a
ViT of any size can be built from scratch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import timm
from torch import nn

from octlens.errors import OctlensError
from octlens.models.pretrained import load_pretrained_file

MODEL_ALIASES: dict[str, str] = {
    "resnet18": "resnet18",
    "resnet50": "resnet50",
    "vit_tiny": "vit_tiny_patch16_224",
    "vit_small": "vit_small_patch16_224",
    "vit_base": "vit_base_patch16_224",
}

HUB = "hub"


def resolve_name(name: str) -> str:
    """The timm name behind an octlens or timm model name."""
    timm_name = MODEL_ALIASES.get(name, name)
    if not timm.is_model(timm_name):
        raise OctlensError(
            f"unknown model '{name}' (octlens names: {', '.join(MODEL_ALIASES)}; "
            "or any name from timm.list_models())"
        )
    return timm_name


def takes_img_size(timm_name: str) -> bool:
    """Whether the architecture is built for one input size (ViTs), so ``img_size`` is passed."""
    config = timm.models.get_pretrained_cfg(timm_name)
    return bool(config and config.fixed_input_size)


def create_model(
    name: str,
    num_classes: int,
    in_chans: int = 1,
    img_size: int | None = None,
    patch_size: int | None = None,
    pretrained: str | Path | None = None,
    **model_kwargs: Any,
) -> nn.Module:
    """Build a timm classifier, from scratch or fine-tuned from pretrained weights.

    ``pretrained`` is a local ``.safetensors``/``.pth`` file (timm or torchvision key layout) or
    ``"hub"`` for timm's own download; either way the input layer is adapted to ``in_chans``
    and the classifier is new.
    """
    timm_name = resolve_name(name)
    kwargs = dict(model_kwargs)
    if takes_img_size(timm_name):
        if img_size is not None:
            kwargs["img_size"] = img_size
        if patch_size is not None:
            kwargs["patch_size"] = patch_size
    elif patch_size is not None:
        raise OctlensError(f"model '{name}' has no patch size (only ViTs take --patch-size)")

    from_hub = pretrained is not None and str(pretrained) == HUB
    try:
        model = timm.create_model(
            timm_name, pretrained=from_hub, num_classes=num_classes, in_chans=in_chans, **kwargs
        )
    except TypeError as error:
        raise OctlensError(f"model '{name}': {error}") from None
    except Exception as error:
        if not from_hub:
            raise
        raise OctlensError(
            f"could not fetch pretrained '{timm_name}' weights from the hub ({type(error).__name__}"
            f": {str(error).splitlines()[0] if str(error) else 'no details'}); offline, pass a "
            "local weights file instead"
        ) from None
    if pretrained is not None and not from_hub:
        load_pretrained_file(model, pretrained)
    return model


def is_vit(model: nn.Module) -> bool:
    """True for transformer classifiers with patch tokens (timm's ``patch_embed``)."""
    return hasattr(model, "patch_embed")
