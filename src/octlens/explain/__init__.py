"""Explainers for CNNs and ViTs: batched, pure PyTorch, every one a small subclass of one base."""

from collections.abc import Sequence

from torch import nn

from octlens.errors import OctlensError, arg
from octlens.explain.base import Explainer, Explanation
from octlens.explain.cam import GradCAM, GradCAMPlusPlus, HiResCAM, LayerCAM
from octlens.explain.legrad import LeGrad
from octlens.explain.lrp import LRP, LRPGamma
from octlens.explain.occlusion import Occlusion
from octlens.explain.reciprocam import ViTReciproCAM
from octlens.explain.rollout import AttentionRollout
from octlens.models import is_vit

EXPLAINERS: dict[str, type[Explainer]] = {
    "gradcam": GradCAM,
    "gradcam++": GradCAMPlusPlus,
    "hirescam": HiResCAM,
    "layercam": LayerCAM,
    "rollout": AttentionRollout,
    "legrad": LeGrad,
    "reciprocam": ViTReciproCAM,
    "occlusion": Occlusion,
    "lrp": LRP,
    "lrp-gamma": LRPGamma,
}

#: The papers' names for methods registered under a shorter one.
ALIASES = {"vit-reciprocam": "reciprocam", "grad-cam": "gradcam", "grad-cam++": "gradcam++"}

#: What the report and the audit run when no methods are named.
CNN_METHODS = ("gradcam", "gradcam++", "hirescam", "layercam")
VIT_METHODS = ("gradcam", "rollout", "legrad", "reciprocam")


def default_methods(model: nn.Module) -> tuple[str, ...]:
    """The methods worth comparing on ``model``: four CAMs on a CNN, ViT-specific ones on a ViT."""
    return VIT_METHODS if is_vit(model) else CNN_METHODS


def check_methods(methods: Sequence[str]) -> list[str]:
    """The registered names of ``methods`` (aliases such as ``vit-reciprocam`` resolved);
    one-line errors for an empty or misspelt list."""
    if not methods:
        raise OctlensError(f"{arg('methods')}: name at least one of {', '.join(EXPLAINERS)}")
    names = [ALIASES.get(method, method) for method in methods]
    unknown = [m for m, name in zip(methods, names, strict=True) if name not in EXPLAINERS]
    if unknown:
        raise OctlensError(f"unknown method(s) {unknown}; choose from {', '.join(EXPLAINERS)}")
    return names


__all__ = [
    "ALIASES",
    "CNN_METHODS",
    "EXPLAINERS",
    "LRP",
    "VIT_METHODS",
    "AttentionRollout",
    "Explainer",
    "Explanation",
    "GradCAM",
    "GradCAMPlusPlus",
    "HiResCAM",
    "LRPGamma",
    "LayerCAM",
    "LeGrad",
    "Occlusion",
    "ViTReciproCAM",
    "check_methods",
    "default_methods",
]
