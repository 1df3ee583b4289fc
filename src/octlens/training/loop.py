"""The training run, step by step: data and splits, model and init, optimiser and schedule, then
the epoch loop (:class:`Trainer`), whose files :class:`~octlens.training.saver.CheckpointSaver`
writes and whose failures :func:`~octlens.training.failures.failures_explained` words.

Determinism: the model is initialized from ``seed`` and every epoch re-seeds its random streams
(see :mod:`octlens.training.epoch`), so a resumed run continues exactly as an uninterrupted one.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from torch import distributed as dist
from torch import nn
from torch.nn import functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from octlens.data.dataset import (
    OCTDataset,
    ScansForEvaluation,
    collate_readable,
    estimate_normalization,
    left_out,
)
from octlens.data.index import DatasetIndex, DataWarning, Sample, scan
from octlens.data.patients import PatientSource
from octlens.data.splits import TrainingSplits, training_splits, write_carved
from octlens.data.transforms import Normalization, eval_transform, train_transform
from octlens.files import remove_stale_temps, require_writable_folder, write_text
from octlens.models import create_model, is_vit
from octlens.runtime import PrecisionPlan, resolve_device, resolve_precision
from octlens.training.checkpoint import Checkpoint
from octlens.training.config import TrainConfig
from octlens.training.distill import Teacher
from octlens.training.distributed import ProcessGroup, check_batch, from_environment, joined
from octlens.training.epoch import (
    Objective,
    Step,
    class_weights,
    epoch_seed,
    seed_everything,
    train_loader,
    train_one_epoch,
    validation_logits,
    warmup_cosine,
)
from octlens.training.failures import NonFiniteLoss, Position, failures_explained
from octlens.training.finetune import (
    InitRun,
    freeze_backbone,
    layer_decay,
    parameter_groups,
    read_init,
)
from octlens.training.history import best_epoch, patience_exhausted
from octlens.training.resume import check_same_data, restoring, resumption
from octlens.training.saver import CheckpointSaver


@dataclass
class TrainResult:
    run_dir: Path
    history: list[dict[str, Any]]
    best_epoch: int
    stopped_early: bool
    precision: str  # what training ran in: "fp32", "bf16" or "fp16"
    main_process: bool = True  # False on the ranks of a torchrun job other than 0

    @property
    def best(self) -> dict[str, Any]:
        return self.history[self.best_epoch - 1]


def train(
    config: TrainConfig,
    resume: bool = False,
    verbose: bool = True,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> TrainResult:
    """Train a classifier as ``config`` says; write checkpoints, history and curves to ``out``.

    Ctrl-C raises :class:`~octlens.errors.Interrupted` saying which epochs are saved; a loss that
    turns NaN or infinite stops the run with an error, and ``last`` keeps the last good epoch.
    ``on_epoch`` gets each epoch's history row once its checkpoints are written; an exception it
    raises (a tuner pruning the run) ends training there, with every finished epoch saved.
    """
    group = from_environment()
    device = group.device(resolve_device(config.device))
    with joined(group, device):
        return _train(config, resume, verbose, on_epoch, group, device)


def _train(
    config: TrainConfig,
    resume: bool,
    verbose: bool,
    on_epoch: Callable[[dict[str, Any]], None] | None,
    group: ProcessGroup,
    device: torch.device,
) -> TrainResult:
    """The steps of a run in order. One function (about 80 lines) on purpose: the order is
    part of the seed's contract (the splits and the normalization draw before the model's
    initialization does), and here it reads top to bottom."""
    console = Console(quiet=not (verbose and group.is_main), markup=False, highlight=False)
    config, init = read_init(config)
    resumed = resumption(config, resume, console)
    precision = resolve_precision(config.precision, device)
    index, splits = _data(config, verbose, group)
    check_batch(config.batch_size, len(splits.train), len(splits.val), group)
    fingerprint = index.fingerprint(index.split(splits.train_split))
    if resumed:
        check_same_data(resumed, config, fingerprint)
    normalization = _normalization(config, index, splits, resumed, init)
    # A teacher that cannot teach fails before the run folder is touched.
    teacher = (
        Teacher(config.teacher, index.classes, config.img_size, normalization, precision)
        if config.teacher is not None
        else None
    )
    model, started_from = _model(config, index, resumed, init)
    frozen = freeze_backbone(model) if config.freeze == "backbone" else []
    channels_last = not is_vit(model)
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    # DDP averages the gradients; running statistics are averaged per epoch (see distributed).
    trained = _distributed(model, device) if group.active else model
    if group.is_main:
        _open_run_folder(config, index, splits, console)

    workers = config.num_workers if config.num_workers is not None else _default_workers(device)
    validation = _Validation.of(index, splits.val, config, normalization, workers, group)
    train_set = OCTDataset(
        index,
        splits.train,
        train_transform(config.img_size, normalization, config.augment),
        config.img_size,
        config.strict,
    )
    steps_per_epoch = len(train_loader(train_set, config, workers, 0, group))
    step = _step(config, model, train_set, len(index.classes), steps_per_epoch, precision, teacher)
    step.channels_last, step.frozen = channels_last, frozen
    history = _restored_history(resumed, step, config, console) if resumed else []

    fine_tuning = {
        "init": started_from,
        "freeze": config.freeze,
        "layer_decay": layer_decay(config),
    }
    _announce(console, config, index, splits, precision, group, fine_tuning, resumed, teacher)
    meta = _run_metadata(config, index, normalization, splits)
    meta["data"]["train_fingerprint"] = fingerprint
    meta["precision"] = precision.name
    meta["fine_tuning"] = fine_tuning
    if teacher is not None:
        meta["distillation"] = teacher.record(config.distill_weight, config.distill_temperature)
    trainer = Trainer(
        config, model, trained, train_set, validation, step, workers, group, console, meta
    )
    stopped_early = trainer.fit(history, on_epoch)
    return TrainResult(
        run_dir=config.out,
        history=history,
        best_epoch=best_epoch(history),
        stopped_early=stopped_early,
        precision=precision.name,
        main_process=group.is_main,
    )


@dataclass
class _Validation:
    """The validation scans this rank scores (every N-th of N ranks), and all their labels.

    Validation is a measurement: a scan that fails to decode is left out, never replaced; the
    ranks' logits are gathered back into the scans' order."""

    index: DatasetIndex
    samples: list[Sample]
    loader: DataLoader
    shard: torch.Tensor
    labels: torch.Tensor

    @classmethod
    def of(
        cls,
        index: DatasetIndex,
        samples: list[Sample],
        config: TrainConfig,
        normalization: Normalization,
        workers: int,
        group: ProcessGroup,
    ) -> _Validation:
        shard = torch.arange(group.rank, len(samples), group.world_size)
        loader = DataLoader(
            ScansForEvaluation(
                index,
                [samples[i] for i in shard.tolist()],
                eval_transform(config.img_size, normalization),
                config.img_size,
            ),
            batch_size=max(1, config.batch_size // group.world_size),
            num_workers=workers,
            collate_fn=collate_readable,
        )
        labels = torch.tensor([sample.label for sample in samples])
        return cls(index, samples, loader, shard, labels)


class Trainer:
    """The epoch loop: train an epoch, validate, record the row, save, stop early.

    Built by :func:`train` from the run's parts; :meth:`fit` continues a history (empty for a
    new run) to the configured epochs or an early stop.
    """

    def __init__(
        self,
        config: TrainConfig,
        model: nn.Module,
        trained: nn.Module,
        train_set: OCTDataset,
        validation: _Validation,
        step: Step,
        workers: int,
        group: ProcessGroup,
        console: Console,
        meta: dict[str, Any],
    ) -> None:
        self.config = config
        self.model = model  # the module itself: its weights are saved and validated
        self.trained = trained  # what takes the training steps: the model, or DDP around it
        self.train_set = train_set
        self.validation = validation
        self.step = step
        self.workers = workers
        self.group = group
        self.console = console
        self.meta = meta
        self.saver = CheckpointSaver(config.out, config.model)
        self._left_out_named = False

    def fit(
        self,
        history: list[dict[str, Any]],
        on_epoch: Callable[[dict[str, Any]], None] | None = None,
    ) -> bool:
        """Train the epochs after ``history``'s last, appending a row for each; True when it
        stopped early. ``on_epoch`` gets each row once the epoch's files are written."""
        config, step = self.config, self.step
        position = Position(history, len(history) + 1)
        with failures_explained(config.out, config, self.group, position):
            for epoch in range(len(history) + 1, config.epochs + 1):
                position.epoch = epoch
                if patience_exhausted(history, config.patience):
                    self.console.print(
                        f"early stop: no val-loss improvement in {config.patience} epochs"
                    )
                    return True
                row = self._epoch(epoch)
                history.append(row)
                self.console.print(
                    f"epoch {epoch}: train loss {row['train_loss']:.4f} acc "
                    f"{row['train_acc']:.3f} | val loss {row['val_loss']:.4f} acc "
                    f"{row['val_acc']:.3f} | {row['images_per_s']:.0f} img/s"
                )
                if self.group.is_main:
                    meta = {**self.meta, "epoch": epoch, "metrics": row, "history": history}
                    self.saver.save(self.model, meta, step.optimizer, step.scheduler, step.scaler)
                if on_epoch is not None:
                    on_epoch(row)
        return patience_exhausted(history, config.patience) and len(history) < config.epochs

    def _epoch(self, epoch: int) -> dict[str, Any]:
        """Train ``epoch`` and validate: its history row."""
        config, group = self.config, self.group
        seed_everything(epoch_seed(config.seed, epoch))
        loader = train_loader(self.train_set, config, self.workers, epoch, group)
        lr = self.step.scheduler.get_last_lr()[0]
        started = time.perf_counter()
        sums = train_one_epoch(
            self.trained, loader, self.step, f"epoch {epoch}/{config.epochs}", self.console
        )
        loss_sum, correct, seen = group.all_sum(sums)
        seconds = time.perf_counter() - started
        group.average_buffers(self.model)
        val_loss, val_acc = self._validate()
        return {
            "epoch": epoch,
            "lr": lr,
            "train_loss": loss_sum / seen,
            "train_acc": correct / seen,
            "val_loss": val_loss,
            "val_acc": val_acc,
            "seconds": round(seconds, 2),
            "images_per_s": round(seen / seconds, 1),
        }

    def _validate(self) -> tuple[float, float]:
        """Validation loss and accuracy over every readable validation scan of every rank."""
        validation, group = self.validation, self.group
        logits, positions = validation_logits(
            self.model,
            validation.loader,
            validation.shard,
            self.step.precision,
            self.step.channels_last,
            group,
            len(validation.index.classes),
        )
        if len(positions) < len(validation.samples) and not self._left_out_named:
            with warnings.catch_warnings():
                if not group.is_main:  # every rank has the gathered list: rank 0 names them
                    warnings.simplefilter("ignore", DataWarning)
                left_out(validation.index, validation.samples, set(positions.tolist()))
            self._left_out_named = True
        labels = validation.labels[positions]
        val_loss = F.cross_entropy(logits, labels).item()
        if not math.isfinite(val_loss):
            raise NonFiniteLoss(f"validation loss {val_loss}")
        return val_loss, (logits.argmax(1) == labels).float().mean().item()


def _data(
    config: TrainConfig, verbose: bool, group: ProcessGroup
) -> tuple[DatasetIndex, TrainingSplits]:
    """The data's index and the run's splits; the data's warnings once, from rank 0."""
    with warnings.catch_warnings():
        if not group.is_main:
            warnings.simplefilter("ignore", DataWarning)
        patients = PatientSource(config.patients, config.patient_pattern)
        index = scan(config.data, config.strict, patients, verbose and group.is_main)
        splits = training_splits(
            index,
            config.train_split,
            config.val_split,
            config.val_fraction,
            config.test_fraction,
            config.seed,
        )
    return index, splits


def _normalization(
    config: TrainConfig,
    index: DatasetIndex,
    splits: TrainingSplits,
    resumed: Checkpoint | None,
    init: InitRun | None,
) -> Normalization:
    """The run's input normalization: the resumed run's, the weights' own when starting from a
    run (they expect the inputs they were trained on), else measured on the training scans."""
    if resumed:
        return Normalization(**resumed.meta["normalization"])
    if init:
        return init.checkpoint.normalization
    return estimate_normalization(index, splits.train, config.img_size, seed=config.seed)


def _model(
    config: TrainConfig, index: DatasetIndex, resumed: Checkpoint | None, init: InitRun | None
) -> tuple[nn.Module, dict[str, Any] | None]:
    """The model, initialized from the seed, then given the weights it starts from (a resumed
    run's, or ``--init``'s); with where they came from, for the run's metadata."""
    seed_everything(config.seed)
    model = create_model(
        config.model,
        num_classes=len(index.classes),
        img_size=config.img_size,
        patch_size=config.patch_size,
        pretrained=None if resumed else config.pretrained,
        **config.model_kwargs,
    )
    if resumed:
        with restoring(resumed):
            model.load_state_dict(resumed.model_state())
        return model, resumed.meta.get("fine_tuning", {}).get("init")
    if init:
        return model, init.load_into(model, index.classes)
    return model, None


def _open_run_folder(
    config: TrainConfig, index: DatasetIndex, splits: TrainingSplits, console: Console
) -> None:
    """Prove the run folder takes files before spending an epoch, clear a killed write's
    debris, and record the settings and the carved splits."""
    out = config.out
    require_writable_folder(out)
    for stale in remove_stale_temps(out):
        console.print(f"removed {stale.name}, left by an interrupted checkpoint write")
    write_text(out / "config.json", config.model_dump_json(indent=2))
    if splits.carved:
        write_carved(out, index, splits.carved)


def _step(
    config: TrainConfig,
    model: nn.Module,
    train_set: OCTDataset,
    num_classes: int,
    steps_per_epoch: int,
    precision: PrecisionPlan,
    teacher: Teacher | None,
) -> Step:
    """AdamW with per-layer rates, warm-up then cosine decay over the run's steps, the gradient
    scaler of the precision and the objective: cross-entropy (class-weighted with
    ``balance="loss"``), mixed with the teacher's answers when distilling. The model's memory
    format and frozen modules are the caller's to set."""
    optimizer = torch.optim.AdamW(
        parameter_groups(model, config.lr, config.weight_decay, layer_decay(config)), lr=config.lr
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        warmup_cosine(
            round(config.warmup_epochs * steps_per_epoch), config.epochs * steps_per_epoch
        ),
    )
    weights = class_weights(train_set.labels, num_classes) if config.balance == "loss" else None
    criterion = nn.CrossEntropyLoss(weight=weights, label_smoothing=config.label_smoothing)
    criterion.to(precision.device)
    objective = Objective(criterion, teacher, config.distill_weight, config.distill_temperature)
    return Step(objective, optimizer, scheduler, precision.grad_scaler(), precision)


def _announce(
    console: Console,
    config: TrainConfig,
    index: DatasetIndex,
    splits: TrainingSplits,
    precision: PrecisionPlan,
    group: ProcessGroup,
    fine_tuning: dict[str, Any],
    resumed: Checkpoint | None,
    teacher: Teacher | None,
) -> None:
    """What the run is about to do, in a few lines: model, device, precision, data, processes,
    the weights it starts from and its teacher."""
    console.print(
        f"{config.model} @ {config.img_size}px on {precision.device.type} ({precision.name}): "
        f"{len(splits.train)} train / {len(splits.val)} val images, classes {index.classes}"
    )
    if group.active:
        console.print(
            f"{group.world_size} processes ({dist.get_backend()}): global batch "
            f"{config.batch_size}, {config.batch_size // group.world_size} per process"
        )
    started_from = fine_tuning["init"]
    if started_from and not resumed:
        console.print(
            f"starting from {started_from['checkpoint']} (epoch {started_from['epoch']}, "
            f"{started_from['head']} classifier; layer decay {fine_tuning['layer_decay']:g}, "
            f"freeze {config.freeze})"
        )
    if teacher is not None:
        console.print(
            f"distilling from {teacher.checkpoint.path} (weight {config.distill_weight:g}, "
            f"temperature {config.distill_temperature:g})"
        )


def _restored_history(
    resumed: Checkpoint, step: Step, config: TrainConfig, console: Console
) -> list[dict[str, Any]]:
    """The resumed run's history, with its optimizer, schedule and scaler state restored."""
    with restoring(resumed):
        history = list(resumed.meta["history"])
        step.optimizer.load_state_dict(resumed.optimizer_state())
        step.scheduler.load_state_dict(resumed.meta["training_state"]["scheduler"])
        step.scaler.load_state_dict(resumed.meta["training_state"]["scaler"])
    console.print(f"resuming {config.out} after epoch {len(history)}")
    return history


def _distributed(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` in DDP, without copying rank 0's buffers to the others at every forward: each
    rank's BatchNorm statistics are its own until they are averaged at the end of the epoch."""
    with warnings.catch_warnings():
        # torch 2.14 renames the option; the old name keeps working, and newer only exists there
        warnings.filterwarnings("ignore", "`broadcast_buffers` is deprecated")
        return DistributedDataParallel(
            model,
            device_ids=[device] if device.type == "cuda" else None,
            broadcast_buffers=False,
        )


def _default_workers(device: torch.device) -> int:
    """Data-loading processes: none when training on the CPU, up to 8 for a GPU.

    On the CPU the workers would take cores from the model's own threads, and decoding a scan
    costs a few ms against tens of ms of compute: ``benchmarks/train_throughput.py`` measured the
    in-process loop at 0.99 of the bare step for resnet18@128 on 2 cores, and 0.73 with a worker.
    """
    if device.type == "cpu":
        return 0
    return max(1, min(8, (os.cpu_count() or 2) - 1))


def _run_metadata(
    config: TrainConfig, index: DatasetIndex, normalization: Normalization, splits: TrainingSplits
) -> dict[str, Any]:
    return {
        "classes": index.classes,
        "model": {
            "name": config.model,
            "img_size": config.img_size,
            "patch_size": config.patch_size,
            "kwargs": config.model_kwargs,
        },
        "img_size": config.img_size,
        "normalization": {"mean": normalization.mean, "std": normalization.std},
        "seed": config.seed,
        "data": {
            "root": str(index.root),
            "train_images": len(splits.train),
            "val_images": len(splits.val),
        },
        "config": config.model_dump(mode="json"),
    }
