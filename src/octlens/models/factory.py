"""Building classifiers by name: one registry of short names over timm's own.

``resnet18``, ``resnet50``, ``vit_tiny``, ``vit_small`` and ``vit_base`` are octlens names; any
other timm model name passes through unchanged. ViTs take any ``img_size`` and ``patch_size``;
``model_kwargs`` reach the timm constructor (``depth``, ``embed_dim``, ``num_heads``, ...), so a
ViT of any size can be built from scratch; ``stem=conv`` gives a ViT a convolutional stem
(:mod:`octlens.models.stems`).
"""

from __future__ import annotations

import copy
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import huggingface_hub
import timm
import torch
from torch import nn

from octlens.errors import OctlensError
from octlens.models.pretrained import load_pretrained_file
from octlens.models.stems import STEMS, ConvStemEmbed

MODEL_ALIASES: dict[str, str] = {
    "resnet18": "resnet18",
    "resnet50": "resnet50",
    "vit_tiny": "vit_tiny_patch16_224",
    "vit_small": "vit_small_patch16_224",
    "vit_base": "vit_base_patch16_224",
}

HUB = "hub"
_HUB_TIMEOUT_S = 3.0


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
    stem = kwargs.pop("stem", "patch")
    if stem not in STEMS:
        raise OctlensError(f"stem={stem}: choose {' or '.join(STEMS)}")
    if stem == "conv":
        if not takes_img_size(timm_name):
            raise OctlensError(f"model '{name}' is not a ViT: stem=conv is for ViTs")
        if pretrained is not None:
            raise OctlensError(
                "stem=conv has no pretrained weights (theirs have a patchify layer): train it "
                "from scratch, or start from an octlens run with --init"
            )
        kwargs["embed_layer"] = ConvStemEmbed
    if takes_img_size(timm_name):
        if img_size is not None:
            kwargs["img_size"] = img_size
        if patch_size is not None:
            kwargs["patch_size"] = patch_size
    elif patch_size is not None:
        raise OctlensError(f"model '{name}' has no patch size (only ViTs take --patch-size)")

    from_hub = pretrained is not None and str(pretrained) == HUB
    if from_hub:
        _require_hub(timm_name)
    try:
        model = timm.create_model(
            timm_name, pretrained=from_hub, num_classes=num_classes, in_chans=in_chans, **kwargs
        )
    except Exception as error:
        if isinstance(error, _BAD_SETTING) and not (from_hub and _fetch_failed(error)):
            # timm checks its arguments with asserts and arithmetic: say which setting is wrong
            raise OctlensError(
                f"model '{name}' cannot be built with {_settings(model_kwargs, kwargs)} "
                f"({type(error).__name__}: {error or 'invalid value'})"
            ) from None
        if not from_hub:
            raise
        raise OctlensError(
            f"could not fetch pretrained '{timm_name}' weights from the hub ({type(error).__name__}"
            f": {str(error).splitlines()[0] if str(error) else 'no details'}); offline, pass a "
            "local weights file instead"
        ) from None
    if model_kwargs:
        try:
            _probe(model, in_chans, _probe_size(kwargs, img_size))
        except _BAD_SETTING as error:
            raise OctlensError(
                f"model '{name}' cannot run with {_settings(model_kwargs, kwargs)} "
                f"({type(error).__name__}: {str(error).splitlines()[0] or 'invalid value'})"
            ) from None
    if pretrained is not None and not from_hub:
        load_pretrained_file(model, pretrained)
    return model


# What timm and torch raise for a setting they cannot use, when building or running a model.
_BAD_SETTING = (TypeError, ValueError, AssertionError, RuntimeError, ZeroDivisionError, IndexError)


def _settings(model_kwargs: dict[str, Any], kwargs: dict[str, Any]) -> str:
    """``key=value, ...`` of the settings a model was built with, for an error message."""
    settings = ", ".join(
        f"{key}={value}"
        for key, value in {**model_kwargs, **kwargs}.items()
        if key != "embed_layer"
    )
    return settings or "these settings"


def _probe_size(kwargs: dict[str, Any], img_size: int | None) -> int:
    """The input size a probe uses: the one the model is built for (timm's 224 if none)."""
    size = kwargs.get("img_size", img_size)
    return size if isinstance(size, int) else 224


def _probe(model: nn.Module, in_chans: int, size: int) -> None:
    """Pass two blank images through a copy of ``model`` in training mode.

    timm takes some keyword arguments it cannot use (``drop_rate=5``, ``drop_path_rate=5``)
    and fails only at the first forward pass: probing here makes them fail before a run folder
    is touched. The copy and the restored random state leave the model and every seeded stream
    as they were.
    """
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        copy.deepcopy(model).train()(torch.zeros(2, in_chans, size, size))


def _fetch_failed(error: BaseException) -> bool:
    """Whether ``error`` came from fetching weights (the disk cache, the network, the hub
    client), not from a setting: huggingface_hub before 1.0 raises a missing cached file as a
    ``ValueError`` too, which would otherwise read as a bad setting."""
    return isinstance(error, OSError) or type(error).__module__.startswith(
        ("huggingface_hub", "requests", "urllib3", "httpx")
    )


def _require_hub(timm_name: str) -> None:
    """Fail in seconds, not after a minute of retries, when hub weights cannot be fetched.

    Weights already in the local cache need no network; otherwise one connection to the host
    that serves them is tried with a short timeout. With ``HF_HUB_OFFLINE`` set, timm's own
    cache lookup fails fast by itself.
    """
    config = timm.models.get_pretrained_cfg(timm_name)
    if config is None or not (config.hf_hub_id or config.url):
        raise OctlensError(f"model '{timm_name}' has no pretrained weights on the hub")
    if config.hf_hub_id:
        cached = huggingface_hub.try_to_load_from_cache(config.hf_hub_id, "model.safetensors")
        if isinstance(cached, str) or huggingface_hub.constants.HF_HUB_OFFLINE:
            return
        url = huggingface_hub.constants.ENDPOINT
    else:
        url = str(config.url)
    host = urlparse(url).hostname or url
    try:
        socket.create_connection((host, 443), timeout=_HUB_TIMEOUT_S).close()
    except OSError as error:
        raise OctlensError(
            f"could not fetch pretrained '{timm_name}' weights from the hub: {host} cannot be "
            f"reached ({error.strerror or type(error).__name__}); offline, pass a local weights "
            "file instead"
        ) from None


def is_vit(model: nn.Module) -> bool:
    """True for a ViT the ViT methods can read: see :func:`require_vit`."""
    return not _missing_vit_parts(model)


def require_vit(model: nn.Module, method: str) -> None:
    """A one-line error naming the model unless it offers what the ViT methods read.

    Those are timm's ViT layout: patch tokens (``patch_embed``), a stack of ``blocks`` each with
    ``norm1`` and an attention module with ``qkv`` and ``num_heads``, and ``num_prefix_tokens``
    (class and distillation tokens) ahead of the patches. A Swin has ``patch_embed`` too, but
    windowed stages instead of blocks over all tokens, so it is refused here, not deep inside.
    """
    missing = _missing_vit_parts(model)
    if missing:
        raise OctlensError(
            f"{method} needs a Vision Transformer in timm's ViT layout; {type(model).__name__} "
            f"has no {', '.join(missing)}"
        )


@dataclass(frozen=True)
class ViTParts:
    """What the ViT methods read of a timm ViT, typed: its blocks, how many prefix (class,
    distillation) tokens lead the sequence, and its patch size, hence the patch grid."""

    blocks: nn.Sequential | nn.ModuleList
    num_prefix_tokens: int
    patch_size: tuple[int, int]

    def grid(self, image_size: Sequence[int]) -> tuple[int, int]:
        """Patches per column and per row for an image (..., H, W): the one place this is
        computed for every method."""
        height, width = image_size[-2], image_size[-1]
        return height // self.patch_size[0], width // self.patch_size[1]

    def block(self, index: int) -> Any:
        """A timm ``Block`` (``norm1``, ``attn``, ``ls1``, ``drop_path1``, ``mlp``, ...)."""
        return self.blocks[index]


def vit_parts(model: nn.Module, method: str = "this method") -> ViTParts:
    """The parts of ``model`` the ViT methods read (a one-line error if it has none)."""
    require_vit(model, method)
    vit: Any = model  # timm's attributes, checked by require_vit
    patch_size = vit.patch_embed.patch_size
    if isinstance(patch_size, int):
        patch_size = (patch_size, patch_size)
    return ViTParts(
        blocks=vit.blocks,
        num_prefix_tokens=int(vit.num_prefix_tokens),
        patch_size=(int(patch_size[0]), int(patch_size[1])),
    )


def _missing_vit_parts(model: nn.Module) -> list[str]:
    missing = [name for name in ("patch_embed", "num_prefix_tokens") if not hasattr(model, name)]
    blocks = getattr(model, "blocks", None)
    if not isinstance(blocks, nn.Sequential | nn.ModuleList) or len(blocks) == 0:
        return [*missing, "blocks"]
    for part in ("norm1", "attn.qkv", "attn.num_heads"):
        if not all(_has_path(block, part) for block in blocks):
            missing.append(f"blocks[].{part}")
    return missing


def _has_path(module: nn.Module, dotted: str) -> bool:
    for name in dotted.split("."):
        if not hasattr(module, name):
            return False
        module = getattr(module, name)
    return True
