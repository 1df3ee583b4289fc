"""One epoch of training and its validation: batches, the objective, the step, the scores.

Determinism: every epoch re-seeds shuffling and dropout from ``(seed, epoch)`` and each scan's
augmentation from ``(seed, epoch, scan)`` (:func:`epoch_seed`), so a run resumed at an epoch
boundary continues exactly as an uninterrupted one would, with no generator state to save, and
the same under torchrun (see :mod:`octlens.training.distributed`) as in one process.
"""

from __future__ import annotations

import math
import random
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch import nn
from torch.utils.data import DataLoader

from octlens.data.dataset import OCTDataset
from octlens.runtime import PrecisionPlan
from octlens.training.config import TrainConfig
from octlens.training.distill import Teacher, distillation_loss
from octlens.training.distributed import ProcessGroup, shard_order
from octlens.training.failures import NonFiniteLoss
from octlens.training.finetune import train_mode
from octlens.training.inference import predict_logits, prepare_input


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of every random stream in ``epoch`` (shuffling, augmentation, dropout): a run
    resumed at an epoch boundary continues exactly as an uninterrupted one."""
    return seed * 1_000_003 + epoch


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def warmup_cosine(warmup_steps: int, total_steps: int):
    """Learning-rate factor per step: linear warm-up from ~0 to 1, then cosine decay to 0."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def train_loader(
    dataset: OCTDataset, config: TrainConfig, workers: int, epoch: int, group: ProcessGroup
) -> DataLoader:
    """This rank's batches of the epoch: the seeded order of all ranks, cut as
    :func:`~octlens.training.distributed.shard_order` says."""
    generator = torch.Generator().manual_seed(epoch_seed(config.seed, epoch))
    # One draw first, as a shuffling DataLoader takes its workers' base seed before its sampler
    # draws: one process keeps the epoch orders of octlens's earlier DataLoader shuffling.
    torch.empty((), dtype=torch.int64).random_(generator=generator)
    if config.balance == "sampler":  # draws with replacement, rarer classes more often
        counts = Counter(dataset.labels)
        weights = [1.0 / counts[label] for label in dataset.labels]
        order = torch.multinomial(
            torch.tensor(weights, dtype=torch.double), len(weights), True, generator=generator
        )
    else:
        order = torch.randperm(len(dataset), generator=generator)
    dataset.epoch_seed = epoch_seed(config.seed, epoch)
    positions = shard_order(
        order.tolist(), config.batch_size, group, drop_last=len(dataset) > config.batch_size
    )
    return DataLoader(
        dataset,
        batch_size=config.batch_size // group.world_size,
        sampler=positions,
        num_workers=workers,
        generator=generator,
        persistent_workers=False,
    )


def class_weights(labels: list[int], num_classes: int) -> torch.Tensor:
    """Inverse-frequency weights, normalized so a balanced set gets all ones."""
    counts = torch.bincount(torch.tensor(labels), minlength=num_classes).float().clamp(min=1)
    return counts.sum() / (num_classes * counts)


@dataclass(frozen=True)
class Objective:
    """The training loss: the labels' cross-entropy, mixed with the teacher's answers when
    distilling. Returns (loss to minimize, label loss); the history records the label loss, so
    its train curve is comparable with a run's that has no teacher."""

    criterion: nn.Module
    teacher: Teacher | None
    weight: float
    temperature: float

    def __call__(
        self, logits: torch.Tensor, labels: torch.Tensor, inputs: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        label_loss = self.criterion(logits, labels)
        if self.teacher is None:
            return label_loss, label_loss
        teacher = self.teacher.logits(inputs)
        loss = distillation_loss(logits, teacher, label_loss, self.weight, self.temperature)
        return loss, label_loss


@dataclass
class Step:
    """What one optimization step needs besides the batch."""

    objective: Objective
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    precision: PrecisionPlan
    channels_last: bool = False  # CNNs train in channels-last memory format
    frozen: list[nn.Module] = field(default_factory=list)  # kept in eval mode (--freeze)


def train_one_epoch(
    model: nn.Module, loader: DataLoader, step: Step, description: str, console: Console
) -> tuple[float, float, float]:
    """One pass over ``loader``: (sum of label losses, correct answers, images) on this rank."""
    train_mode(model, step.frozen)
    total_loss = correct = seen = 0.0
    started = time.perf_counter()
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(
            "loss {task.fields[loss]:.3f} acc {task.fields[acc]:.3f} {task.fields[ips]:.0f} img/s"
        ),
        TimeRemainingColumn(),
        console=console,
        disable=not console.is_terminal,
        transient=True,
    )
    with progress:
        total = len(loader.sampler)  # type: ignore[arg-type]  # this rank's positions
        task = progress.add_task(description, total=total, loss=0.0, acc=0.0, ips=0.0)
        for images, labels in loader:
            inputs = prepare_input(images, step.precision.device, step.channels_last)
            labels = labels.to(step.precision.device)
            with step.precision.autocast():
                logits = model(inputs)
            loss, label_loss = step.objective(logits.float(), labels, inputs)
            if not torch.isfinite(loss):
                raise NonFiniteLoss(f"training loss {loss.item()} at image {seen:.0f}")
            step.optimizer.zero_grad(set_to_none=True)
            step.scaler.scale(loss).backward()
            step.scaler.step(step.optimizer)
            step.scaler.update()
            step.scheduler.step()

            batch = len(labels)
            total_loss += label_loss.item() * batch
            correct += (logits.argmax(1) == labels).sum().item()
            seen += batch
            progress.update(
                task,
                advance=batch,
                loss=total_loss / seen,
                acc=correct / seen,
                ips=seen / (time.perf_counter() - started),
            )
    return total_loss, correct, seen


def validation_logits(
    model: nn.Module,
    loader: DataLoader,
    shard: torch.Tensor,
    precision: PrecisionPlan,
    channels_last: bool,
    group: ProcessGroup,
    num_classes: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits of the readable validation scans and their positions, in order, from all ranks."""
    logits, positions = predict_logits(model, loader, precision, channels_last)
    if not len(logits):  # this rank could decode none of its scans; others may have
        logits = logits.new_zeros((0, num_classes))
    logits = group.gather_rows(logits)
    positions = group.gather_rows(shard[positions])
    order = positions.argsort()
    return logits[order], positions[order]
