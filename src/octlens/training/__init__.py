"""Training classifiers: config, checkpoints, the loop, and its history."""

from octlens.training.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from octlens.training.config import TrainConfig
from octlens.training.loop import TrainResult, train

__all__ = [
    "Checkpoint",
    "TrainConfig",
    "TrainResult",
    "load_checkpoint",
    "save_checkpoint",
    "train",
]
