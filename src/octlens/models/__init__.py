"""Classifiers over timm: built by name, from scratch or from pretrained weights."""

from octlens.models.factory import (
    MODEL_ALIASES,
    ViTParts,
    create_model,
    is_vit,
    require_vit,
    resolve_name,
    vit_parts,
)
from octlens.models.pretrained import is_classifier, load_pretrained_file, load_pretrained_state

__all__ = [
    "MODEL_ALIASES",
    "ViTParts",
    "create_model",
    "is_classifier",
    "is_vit",
    "load_pretrained_file",
    "load_pretrained_state",
    "require_vit",
    "resolve_name",
    "vit_parts",
]
