"""Training classifiers: config, checkpoints, the loop, and its history.

The names below are imported on first use, so that reading :class:`TrainConfig` (which the
command line does to build its options) does not load PyTorch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from octlens.training.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
    from octlens.training.config import TrainConfig
    from octlens.training.loop import TrainResult, train

_HOMES = {
    "Checkpoint": "octlens.training.checkpoint",
    "load_checkpoint": "octlens.training.checkpoint",
    "save_checkpoint": "octlens.training.checkpoint",
    "TrainConfig": "octlens.training.config",
    "TrainResult": "octlens.training.loop",
    "train": "octlens.training.loop",
}

__all__ = [
    "Checkpoint",
    "TrainConfig",
    "TrainResult",
    "load_checkpoint",
    "save_checkpoint",
    "train",
]


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'octlens.training' has no attribute '{name}'")
    return getattr(importlib.import_module(_HOMES[name]), name)
