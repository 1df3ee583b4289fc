"""Training classifiers: config, precision, checkpoints, the loop, and its history."""

from octlens.training.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from octlens.training.config import TrainConfig
from octlens.training.loop import TrainResult, train
from octlens.training.precision import resolve_device, resolve_precision

__all__ = [
    "Checkpoint",
    "TrainConfig",
    "TrainResult",
    "load_checkpoint",
    "resolve_device",
    "resolve_precision",
    "save_checkpoint",
    "train",
]
