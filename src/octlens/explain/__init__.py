"""Explainers for CNNs and ViTs: batched, pure PyTorch, every one a small subclass of one base."""

from collections.abc import Sequence

from torch import nn

from octlens.errors import OctlensError, arg
from octlens.explain.attnlrp import CPLRP, AttnLRP
from octlens.explain.base import Explainer, Explanation
from octlens.explain.cam import GradCAM, GradCAMPlusPlus, HiResCAM, LayerCAM, LayerCAMFused
from octlens.explain.legrad import LeGrad
from octlens.explain.lrp import LRP, LRPGamma
from octlens.explain.occlusion import Occlusion
from octlens.explain.reciprocam import ViTReciproCAM
from octlens.explain.rollout import AttentionRollout
from octlens.models import is_vit
from octlens.runtime import PrecisionPlan

EXPLAINERS: dict[str, type[Explainer]] = {
    "gradcam": GradCAM,
    "gradcam++": GradCAMPlusPlus,
    "hirescam": HiResCAM,
    "layercam": LayerCAM,
    "layercam-fused": LayerCAMFused,
    "rollout": AttentionRollout,
    "legrad": LeGrad,
    "reciprocam": ViTReciproCAM,
    "occlusion": Occlusion,
    "lrp": LRP,
    "lrp-gamma": LRPGamma,
    "attnlrp": AttnLRP,
    "cp-lrp": CPLRP,
}

#: The papers' names for methods registered under a shorter one.
ALIASES = {"vit-reciprocam": "reciprocam", "grad-cam": "gradcam", "grad-cam++": "gradcam++"}

#: What the report and the audit run when no methods are named.
CNN_METHODS = ("gradcam", "gradcam++", "hirescam", "layercam")
VIT_METHODS = ("gradcam", "rollout", "legrad", "reciprocam")


def default_methods(model: nn.Module) -> tuple[str, ...]:
    """The methods worth comparing on ``model``: four CAMs on a CNN, ViT-specific ones on a ViT."""
    return VIT_METHODS if is_vit(model) else CNN_METHODS


def build_explainer(
    name: str,
    model: nn.Module,
    precision: str | PrecisionPlan = "auto",
    layer: str | None = None,
) -> Explainer:
    """The explainer registered as ``name``, on ``model``; ``layer`` (a dotted module name such
    as ``layer3``) for the methods that explain one layer, a one-line error for the others."""
    method = EXPLAINERS[name]
    if layer is None:
        return method(model, precision=precision)
    check_layer([name], layer)
    return method(model, target_layer=layer, precision=precision)  # type: ignore[call-arg]


def check_layer(methods: Sequence[str], layer: str | None) -> None:
    """A one-line error when ``layer`` is given for a method that explains no single layer."""
    if layer is None:
        return
    for name in methods:
        if not EXPLAINERS[name].takes_layer:
            layered = ", ".join(n for n, m in EXPLAINERS.items() if m.takes_layer)
            raise OctlensError(
                f"{arg('layer')} {layer}: {name} does not explain one layer (the methods that "
                f"do: {layered})"
            )


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
    "CPLRP",
    "EXPLAINERS",
    "LRP",
    "VIT_METHODS",
    "AttentionRollout",
    "AttnLRP",
    "Explainer",
    "Explanation",
    "GradCAM",
    "GradCAMPlusPlus",
    "HiResCAM",
    "LRPGamma",
    "LayerCAM",
    "LayerCAMFused",
    "LeGrad",
    "Occlusion",
    "ViTReciproCAM",
    "build_explainer",
    "check_layer",
    "check_methods",
    "default_methods",
]
