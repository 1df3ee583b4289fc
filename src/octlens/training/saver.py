"""A run's files after each epoch: ``best``, ``last``, the history and the learning curves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from octlens.errors import OctlensError
from octlens.training.checkpoint import save_checkpoint
from octlens.training.failures import saved
from octlens.training.history import best_epoch, plot_learning_curves, write_history


class CheckpointSaver:
    """Writes ``out``'s files at the end of each epoch (on the main process only).

    ``best.safetensors`` holds the epoch :func:`~octlens.training.history.best_epoch` names (the
    lowest validation loss, the first of equals), ``last.safetensors`` the latest epoch with the
    optimizer, schedule and scaler state a resumed run continues from; ``history.csv`` and
    ``learning_curves.png`` are rewritten whole. Every file is written atomically, so a write
    that fails (a full disk) leaves the previous epoch's files intact, and the error says so.
    """

    def __init__(self, out: Path, title: str) -> None:
        self.out = out
        self.title = title

    def save(
        self,
        model: nn.Module,
        meta: dict[str, Any],
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        scaler: torch.amp.GradScaler,
    ) -> None:
        history = meta["history"]
        try:
            if best_epoch(history) == history[-1]["epoch"]:
                save_checkpoint(self.out / "best.safetensors", model, meta)
            save_checkpoint(
                self.out / "last.safetensors",
                model,
                meta,
                optimizer,
                {"scheduler": scheduler.state_dict(), "scaler": scaler.state_dict()},
            )
            write_history(history, self.out / "history.csv")
            plot_learning_curves(history, self.out / "learning_curves.png", title=self.title)
        except OctlensError as error:  # a full disk: the previous files are intact
            raise OctlensError(
                f"{error}; {saved(history[:-1])}; make room, then add --resume"
            ) from None
