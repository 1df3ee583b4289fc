"""The one base every explainer derives from: targets, hooks, model state, and the output map.

An explainer takes images ``(B, 1, H, W)`` and per-image target classes (default: the predicted
class) and returns an :class:`Explanation` whose ``raw`` map is ``(B, H, W)`` float32 at input
resolution. Whatever an explainer changes on the model while it runs (hooks, train/eval mode,
``requires_grad`` flags, timm's fused-attention switches) is undone when it returns, also on error.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.hooks import RemovableHandle

from octlens.errors import OctlensError
from octlens.models import is_vit, require_vit
from octlens.runtime import PrecisionPlan, plan_for


@dataclass
class Explanation:
    """Saliency maps for a batch: ``raw`` (B, H, W) fp32 at input resolution, and the targets."""

    raw: torch.Tensor
    targets: torch.Tensor

    @property
    def normalized(self) -> torch.Tensor:
        """Each map min-max scaled to [0, 1] (a constant map becomes all zeros)."""
        return scaled_to_unit(self.raw)


def scaled_to_unit(maps: torch.Tensor) -> torch.Tensor:
    """Each map of ``maps`` (B, ...) min-max scaled to [0, 1]; a constant map becomes zeros."""
    flat = maps.flatten(1)
    low = flat.min(dim=1, keepdim=True).values
    span = (flat.max(dim=1, keepdim=True).values - low).clamp_min(1e-12)
    return ((flat - low) / span).view_as(maps)


class Explainer(ABC):
    """Base of all explainers: call it with images and optional targets.

    Subclasses implement :meth:`_explain`, returning maps (B, h, w) at any resolution; the base
    checks targets, restores model state, and upsamples bilinearly to the input size.
    """

    #: Set by methods that read attention or tokens: they refuse other models up front.
    vit_only: ClassVar[bool] = False
    #: The method's name in error messages.
    title: ClassVar[str] = "this method"
    #: Set by methods that explain one named layer (``target_layer``, the CLI's ``--layer``).
    takes_layer: ClassVar[bool] = False

    @classmethod
    def supports(cls, model: nn.Module) -> bool:
        """Whether this method can explain ``model`` (a ViT-only method cannot explain a CNN)."""
        return not cls.vit_only or is_vit(model)

    def __init__(self, model: nn.Module, precision: str | PrecisionPlan = "auto") -> None:
        if self.vit_only:
            require_vit(model, self.title)
        self.model = model
        device = next(model.parameters()).device
        # auto: fp32 on CPUs (numbers must not depend on the CPU), AMP on CUDA; maps always fp32.
        self.precision = plan_for(precision, device, measuring=True)

    def __call__(
        self, images: torch.Tensor, targets: Sequence[int] | torch.Tensor | None = None
    ) -> Explanation:
        if images.dim() != 4:
            raise OctlensError(f"expected images (B, C, H, W), got shape {tuple(images.shape)}")
        if targets is not None:
            targets = torch.as_tensor(targets, dtype=torch.long, device=images.device).flatten()
            if len(targets) != len(images):
                raise OctlensError(
                    f"{len(targets)} targets for {len(images)} images: give one per image"
                )
        with preserved_state(self.model), self.precision.autocast():
            self.model.eval()
            maps, targets = self._explain(images, targets)
        maps = maps.float()
        if not torch.isfinite(maps).all():
            raise OctlensError(
                f"{type(self).__name__} gave NaN or infinite maps: the model's outputs or "
                "weights are not finite on these images"
            )
        if maps.shape[-2:] != images.shape[-2:]:
            maps = F.interpolate(
                maps[:, None], size=images.shape[-2:], mode="bilinear", align_corners=False
            )[:, 0]
        return Explanation(raw=maps.detach(), targets=targets)

    @abstractmethod
    def _explain(
        self, images: torch.Tensor, targets: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Maps (B, h, w) and the targets used: the given ones, or the predicted classes.

        Each method picks default targets from the logits of its own forward pass, so no method
        pays for an extra pass to find them.
        """


@contextlib.contextmanager
def preserved_state(model: nn.Module) -> Iterator[None]:
    """Restore train/eval mode, ``requires_grad`` and fused-attention flags on exit."""
    modes = {module: module.training for module in model.modules()}
    grad_flags = {param: param.requires_grad for param in model.parameters()}
    fused = {m: bool(m.fused_attn) for m in model.modules() if hasattr(m, "fused_attn")}
    try:
        yield
    finally:
        for module, training in modes.items():
            module.training = training
        for param, flag in grad_flags.items():
            param.requires_grad_(flag)
        for module, flag in fused.items():
            setattr(module, "fused_attn", flag)  # noqa: B010 (a flag timm attention modules own)


@contextlib.contextmanager
def forward_hooks(
    hooks: Sequence[tuple[nn.Module, Callable[..., object]]],
) -> Iterator[list[RemovableHandle]]:
    """Register forward hooks for the duration of a ``with`` block; always remove them."""
    handles: list[RemovableHandle] = []
    try:
        for module, hook in hooks:
            handles.append(module.register_forward_hook(hook))
        yield handles
    finally:
        for handle in handles:
            handle.remove()


def predicted_unless_given(logits: torch.Tensor, targets: torch.Tensor | None) -> torch.Tensor:
    return logits.detach().argmax(dim=1) if targets is None else targets


def target_scores(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The logit of each image's target class, (B,)."""
    return logits.gather(1, targets[:, None])[:, 0]


def target_probabilities(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The softmax probability (fp32) of each image's target class, (B,)."""
    return torch.softmax(logits.float(), dim=1).gather(1, targets[:, None])[:, 0]
