"""Explainers for CNNs and ViTs: batched, pure PyTorch, every one a small subclass of one base."""

from octlens.explain.base import Explainer, Explanation
from octlens.explain.cam import GradCAM, GradCAMPlusPlus, HiResCAM, LayerCAM
from octlens.explain.legrad import LeGrad
from octlens.explain.occlusion import Occlusion
from octlens.explain.reciprocam import ViTReciproCAM
from octlens.explain.rollout import AttentionRollout

EXPLAINERS: dict[str, type[Explainer]] = {
    "gradcam": GradCAM,
    "gradcam++": GradCAMPlusPlus,
    "hirescam": HiResCAM,
    "layercam": LayerCAM,
    "rollout": AttentionRollout,
    "legrad": LeGrad,
    "reciprocam": ViTReciproCAM,
    "occlusion": Occlusion,
}

__all__ = [
    "EXPLAINERS",
    "AttentionRollout",
    "Explainer",
    "Explanation",
    "GradCAM",
    "GradCAMPlusPlus",
    "HiResCAM",
    "LayerCAM",
    "LeGrad",
    "Occlusion",
    "ViTReciproCAM",
]
