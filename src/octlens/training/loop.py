"""The training run: data, model, optimizer, epochs, checkpoints, resume, early stopping.

Determinism: the model is initialized from ``seed``; every epoch re-seeds shuffling and dropout
from ``(seed, epoch)`` and each scan's augmentation from ``(seed, epoch, scan)``. A resumed run
therefore continues exactly as an uninterrupted one would, with no generator state to save, and
the same under torchrun (see :mod:`octlens.training.distributed`) as in one process.
"""

from __future__ import annotations

import math
import os
import random
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
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
from octlens.data.index import SINGLE_SPLIT, DatasetIndex, DataWarning, Sample, scan
from octlens.data.patients import PatientSource
from octlens.data.splits import find_leakage, split_by_patient, write_carved
from octlens.data.transforms import Normalization, eval_transform, train_transform
from octlens.errors import Interrupted, OctlensError
from octlens.files import (
    first_problem,
    remove_stale_temps,
    require_writable_folder,
    write_text,
)
from octlens.models import create_model, is_vit
from octlens.runtime import PrecisionPlan, resolve_device, resolve_precision
from octlens.training.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from octlens.training.config import TrainConfig
from octlens.training.distill import Teacher, distillation_loss
from octlens.training.distributed import (
    ProcessGroup,
    Stopped,
    check_batch,
    from_environment,
    joined,
    lost_peer,
    shard_order,
)
from octlens.training.finetune import (
    freeze_backbone,
    layer_decay,
    parameter_groups,
    read_init,
    train_mode,
)
from octlens.training.history import plot_learning_curves, write_history
from octlens.training.inference import predict_logits, prepare_input

# Settings that may differ between a run and its resumption; any other change is a new run.
# ``out`` and ``data`` are compared as places (a moved run, the same data by another path).
# ``epochs`` is not one: the learning-rate schedule spans the epochs the run started with.
_RESUMABLE_CHANGES = {"patience", "num_workers", "device", "out", "data"}
# Files named by a setting: the same file by another path is the same setting (a manifest
# edited since changes the carve, which the training fingerprint catches).
_FILE_SETTINGS = {"patients"}


class NonFiniteLoss(ArithmeticError):
    """The loss became NaN or infinite: the run diverged."""


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
    console = Console(quiet=not (verbose and group.is_main), markup=False, highlight=False)
    config, init = read_init(config)
    out = config.out
    last_path = out / "last.safetensors"
    if out.exists() and not out.is_dir():
        raise OctlensError(f"{out}: --out is a file, not a folder")
    resumed = _load_resumable(last_path, config, console) if resume else None
    if resumed is None and last_path.exists():
        raise OctlensError(f"{out}: holds a run already; add --resume, or choose another --out")

    precision = resolve_precision(config.precision, device)
    with warnings.catch_warnings():
        if not group.is_main:  # the data's warnings once, from rank 0
            warnings.simplefilter("ignore", DataWarning)
        patients = PatientSource(config.patients, config.patient_pattern)
        index = scan(config.data, config.strict, patients, verbose and group.is_main)
        train_split = _train_split_name(index, config.train_split)
        train_samples, val_samples, carved = _train_val_samples(index, config, train_split)
        _warn_leakage(index, train_split)
    check_batch(config.batch_size, len(train_samples), len(val_samples), group)
    fingerprint = index.fingerprint(index.split(train_split))
    if resumed:
        _check_same_data(resumed, config, fingerprint)
    if resumed:
        normalization = Normalization(**resumed.meta["normalization"])
    elif init:  # the weights expect the inputs they were trained on
        normalization = init.checkpoint.normalization
    else:
        normalization = estimate_normalization(
            index, train_samples, config.img_size, seed=config.seed
        )

    # A teacher that cannot teach fails before the run folder is touched.
    teacher = (
        Teacher(config.teacher, index.classes, config.img_size, normalization, precision)
        if config.teacher is not None
        else None
    )

    _seed_everything(config.seed)
    model = create_model(
        config.model,
        num_classes=len(index.classes),
        img_size=config.img_size,
        patch_size=config.patch_size,
        pretrained=None if resumed else config.pretrained,
        **config.model_kwargs,
    )
    if resumed:
        with _restoring(resumed):
            model.load_state_dict(resumed.model_state())
        started_from = resumed.meta.get("fine_tuning", {}).get("init")
    elif init:
        started_from = init.load_into(model, index.classes)
    else:
        started_from = None
    frozen = freeze_backbone(model) if config.freeze == "backbone" else []
    channels_last = not is_vit(model)
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)

    # DDP averages the gradients; running statistics are averaged per epoch (see distributed).
    trained = _distributed(model, device) if group.active else model

    # Prove the run folder takes files before spending an epoch, and clear a killed write's debris.
    if group.is_main:
        require_writable_folder(out)
        for stale in remove_stale_temps(out):
            console.print(f"removed {stale.name}, left by an interrupted checkpoint write")
        write_text(out / "config.json", config.model_dump_json(indent=2))
        if carved:
            write_carved(out, index, carved)

    workers = config.num_workers if config.num_workers is not None else _default_workers(device)
    # Validation is a measurement: a scan that fails to decode is left out, never replaced.
    # Each rank scores every N-th scan; the logits are gathered back into the scans' order.
    val_shard = torch.arange(group.rank, len(val_samples), group.world_size)
    val_loader = DataLoader(
        ScansForEvaluation(
            index,
            [val_samples[i] for i in val_shard.tolist()],
            eval_transform(config.img_size, normalization),
            config.img_size,
        ),
        batch_size=max(1, config.batch_size // group.world_size),
        num_workers=workers,
        collate_fn=collate_readable,
    )
    val_labels = torch.tensor([sample.label for sample in val_samples])
    train_set = OCTDataset(
        index,
        train_samples,
        train_transform(config.img_size, normalization, config.augment),
        config.img_size,
        config.strict,
    )
    steps_per_epoch = len(_train_loader(train_set, config, workers, 0, group))

    decay = layer_decay(config)
    optimizer = torch.optim.AdamW(
        parameter_groups(model, config.lr, config.weight_decay, decay), lr=config.lr
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        warmup_cosine(
            round(config.warmup_epochs * steps_per_epoch), config.epochs * steps_per_epoch
        ),
    )
    scaler = precision.grad_scaler()
    class_weights = (
        _class_weights(train_set.labels, len(index.classes)) if config.balance == "loss" else None
    )
    criterion = nn.CrossEntropyLoss(weight=class_weights, label_smoothing=config.label_smoothing)
    criterion.to(device)

    history: list[dict[str, Any]] = []
    if resumed:
        with _restoring(resumed):
            history = list(resumed.meta["history"])
            optimizer.load_state_dict(resumed.optimizer_state())
            scheduler.load_state_dict(resumed.meta["training_state"]["scheduler"])
            scaler.load_state_dict(resumed.meta["training_state"]["scaler"])
        console.print(f"resuming {out} after epoch {len(history)}")

    console.print(
        f"{config.model} @ {config.img_size}px on {device.type} ({precision.name}): "
        f"{len(train_samples)} train / {len(val_samples)} val images, classes {index.classes}"
    )
    if group.active:
        console.print(
            f"{group.world_size} processes ({dist.get_backend()}): global batch "
            f"{config.batch_size}, {config.batch_size // group.world_size} per process"
        )
    if started_from and not resumed:
        console.print(
            f"starting from {started_from['checkpoint']} (epoch {started_from['epoch']}, "
            f"{started_from['head']} classifier; layer decay {decay:g}, freeze {config.freeze})"
        )
    meta_base = _run_metadata(config, index, normalization, len(train_samples), len(val_samples))
    meta_base["data"]["train_fingerprint"] = fingerprint
    meta_base["precision"] = precision.name
    meta_base["fine_tuning"] = {"init": started_from, "freeze": config.freeze, "layer_decay": decay}
    if teacher is not None:
        meta_base["distillation"] = teacher.record(
            config.distill_weight, config.distill_temperature
        )
        console.print(
            f"distilling from {teacher.checkpoint.path} (weight {config.distill_weight:g}, "
            f"temperature {config.distill_temperature:g})"
        )
    stopped_early = False
    val_left_out_named = False
    epoch = len(history) + 1
    try:
        for epoch in range(len(history) + 1, config.epochs + 1):
            if _patience_exhausted(history, config.patience):
                stopped_early = True
                console.print(f"early stop: no val-loss improvement in {config.patience} epochs")
                break
            _seed_everything(epoch_seed(config.seed, epoch))
            loader = _train_loader(train_set, config, workers, epoch, group)
            lr = scheduler.get_last_lr()[0]
            started = time.perf_counter()
            sums = _train_one_epoch(
                trained,
                loader,
                _Objective(criterion, teacher, config.distill_weight, config.distill_temperature),
                optimizer,
                scheduler,
                scaler,
                precision,
                channels_last,
                frozen,
                description=f"epoch {epoch}/{config.epochs}",
                console=console,
            )
            loss_sum, correct, seen = group.all_sum(sums)
            train_loss, train_acc = loss_sum / seen, correct / seen
            seconds = time.perf_counter() - started
            group.average_buffers(model)
            logits, positions = _validation_logits(
                model, val_loader, val_shard, precision, channels_last, group, len(index.classes)
            )
            if len(positions) < len(val_samples) and not val_left_out_named:
                with warnings.catch_warnings():
                    if not group.is_main:  # every rank has the gathered list: rank 0 names them
                        warnings.simplefilter("ignore", DataWarning)
                    left_out(index, val_samples, set(positions.tolist()))  # or raises if all
                val_left_out_named = True
            labels = val_labels[positions]
            val_loss = F.cross_entropy(logits, labels).item()
            if not math.isfinite(val_loss):
                raise NonFiniteLoss(f"validation loss {val_loss}")
            row = {
                "epoch": epoch,
                "lr": lr,
                "train_loss": train_loss,
                "train_acc": train_acc,
                "val_loss": val_loss,
                "val_acc": (logits.argmax(1) == labels).float().mean().item(),
                "seconds": round(seconds, 2),
                "images_per_s": round(seen / seconds, 1),
            }
            history.append(row)
            console.print(
                f"epoch {epoch}: train loss {train_loss:.4f} acc {train_acc:.3f} | "
                f"val loss {row['val_loss']:.4f} acc {row['val_acc']:.3f} | "
                f"{row['images_per_s']:.0f} img/s"
            )
            if group.is_main:
                meta = {**meta_base, "epoch": epoch, "metrics": row, "history": history}
                _save_epoch(out, model, meta, optimizer, scheduler, scaler, config.model)
            if on_epoch is not None:
                on_epoch(row)
        else:
            stopped_early = (
                _patience_exhausted(history, config.patience) and len(history) < config.epochs
            )
    except Stopped:
        raise Interrupted(
            f"{out}: stopped {_when(history, epoch)} by torchrun (another process of the job "
            f"failed, or the job was cancelled); {_saved(history)}" + _relaunch(history)
        ) from None
    except RuntimeError as error:
        if not (group.active and lost_peer(error)):
            raise
        raise OctlensError(
            f"{out}: lost another process of the job {_when(history, epoch)} "
            f"({str(error).splitlines()[0]}); {_saved(history)}" + _relaunch(history)
        ) from None
    except KeyboardInterrupt:
        raise Interrupted(
            f"{out}: interrupted {_when(history, epoch)}; {_saved(history)}"
            + ("; add --resume to continue" if history else "")
        ) from None
    except NonFiniteLoss as error:
        raise OctlensError(
            f"{out}: training diverged in epoch {epoch} ({error}); {_saved(history)}; "
            + _step_settings(config)
        ) from None
    best_epoch = min(history, key=lambda r: r["val_loss"])["epoch"]
    return TrainResult(
        run_dir=out,
        history=history,
        best_epoch=best_epoch,
        stopped_early=stopped_early,
        precision=precision.name,
        main_process=group.is_main,
    )


def _step_settings(config: TrainConfig) -> str:
    """What to lower after a divergence: the settings that size each step, with their values.

    AdamW moves each weight by about ``lr`` (the normalized gradient) and takes ``lr x
    weight_decay`` of it (the decay); with a weight decay above 1 (usual values are 0.01-0.3)
    the decay is the likelier cause, so it is named first.
    """
    rate = f"--lr (now {config.lr:g})"
    decay = (
        f"--weight-decay (now {config.weight_decay:g}: each step removes a share "
        f"{config.lr * config.weight_decay:.2g} of every weight)"
    )
    first, then = (decay, rate) if config.weight_decay > 1 else (rate, decay)
    return f"try a lower {first} or {then}"


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


def _save_epoch(
    out: Path,
    model: nn.Module,
    meta: dict[str, Any],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    title: str,
) -> None:
    """``best`` (when this epoch's validation loss is the lowest), ``last``, history, curves."""
    history = meta["history"]
    try:
        if history[-1]["val_loss"] <= min(r["val_loss"] for r in history):
            save_checkpoint(out / "best.safetensors", model, meta)
        save_checkpoint(
            out / "last.safetensors",
            model,
            meta,
            optimizer,
            {"scheduler": scheduler.state_dict(), "scaler": scaler.state_dict()},
        )
        write_history(history, out / "history.csv")
        plot_learning_curves(history, out / "learning_curves.png", title=title)
    except OctlensError as error:  # a full disk: the previous files are intact
        raise OctlensError(
            f"{error}; {_saved(history[:-1])}; make room, then add --resume"
        ) from None


def _validation_logits(
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


def _when(history: list[dict[str, Any]], epoch: int) -> str:
    """ "in epoch N", or "after epoch N" once its row is in the history (saving, or between)."""
    if history and history[-1]["epoch"] == epoch:
        return f"after epoch {epoch}"
    return f"in epoch {epoch}"


def _relaunch(history: list[dict[str, Any]]) -> str:
    return "; relaunch the same command with --resume" if history else ""


def _saved(history: list[dict[str, Any]]) -> str:
    if not history:
        return "no epoch finished, so no checkpoint was written"
    return f"epochs 1-{len(history)} are saved (last.safetensors)"


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of every random stream in ``epoch`` (shuffling, augmentation, dropout): a run
    resumed at an epoch boundary continues exactly as an uninterrupted one."""
    return seed * 1_000_003 + epoch


def warmup_cosine(warmup_steps: int, total_steps: int):
    """Learning-rate factor per step: linear warm-up from ~0 to 1, then cosine decay to 0."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


@dataclass(frozen=True)
class _Objective:
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


def _train_one_epoch(
    model: nn.Module,
    loader: DataLoader,
    objective: _Objective,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    precision: PrecisionPlan,
    channels_last: bool,
    frozen: list[nn.Module],
    description: str,
    console: Console,
) -> tuple[float, float, float]:
    """One pass over ``loader``: (sum of label losses, correct answers, images) on this rank."""
    train_mode(model, frozen)
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
            inputs = prepare_input(images, precision.device, channels_last)
            labels = labels.to(precision.device)
            with precision.autocast():
                logits = model(inputs)
            loss, label_loss = objective(logits.float(), labels, inputs)
            if not torch.isfinite(loss):
                raise NonFiniteLoss(f"training loss {loss.item()} at image {seen:.0f}")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()

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


def _train_split_name(index: DatasetIndex, requested: str) -> str:
    """``requested``, or the one split of a single-split dataset (an ImageFolder's ``all``)."""
    if requested not in index.splits and list(index.splits) == [SINGLE_SPLIT]:
        return SINGLE_SPLIT
    return requested


def _train_val_samples(
    index: DatasetIndex, config: TrainConfig, train_split: str
) -> tuple[list[Sample], list[Sample], dict[str, list[Sample]]]:
    """The train split, the val split, and the splits carved by patient from train.

    A dataset of one split (an ImageFolder, ``all``) trains on it. Validation is the val split,
    or a carve of ``val_fraction`` of train when there is none; with ``test_fraction``, a test
    split is carved first when the data has none. Carved splits are recorded in the run
    (``splits.json``) so that evaluation finds the same scans.
    """
    train_samples = index.split(train_split)
    missing = index.missing_classes(train_samples)
    if missing:
        raise OctlensError(
            f"{index.root}: the training split '{train_split}' has no images of "
            f"{', '.join(missing)}; a model cannot learn a class it never sees"
        )
    carved: dict[str, list[Sample]] = {}
    if config.test_fraction > 0 and "test" not in index.splits:
        train_samples, carved["test"] = split_by_patient(
            train_samples, config.test_fraction, seed=config.seed + 1
        )
    if config.val_split in index.splits and config.val_split != train_split:
        val_samples = index.split(config.val_split)
    else:
        train_samples, val_samples = split_by_patient(
            train_samples, config.val_fraction, seed=config.seed
        )
        carved["val"] = val_samples
    for name, samples in (("training", train_samples), ("validation", val_samples)):
        if not samples:
            raise OctlensError(f"{index.root}: no readable {name} images")
    missing = index.missing_classes(train_samples)
    if missing:
        raise OctlensError(
            f"{index.root}: carving {' and '.join(carved)} by patient left no training images of "
            f"{', '.join(missing)} (too few patients); give more scans or a '{config.val_split}' "
            "split"
        )
    return train_samples, val_samples, carved


def _warn_leakage(index: DatasetIndex, train_split: str) -> None:
    """Warn when the given splits share patients with the training split."""
    leaks = [leak for leak in find_leakage(index) if train_split in leak.splits]
    if not leaks:
        return
    shown = "; ".join(f"{leak.key} in {', '.join(leak.splits)}" for leak in leaks[:3])
    more = f" and {len(leaks) - 3} more" if len(leaks) > 3 else ""
    warnings.warn(
        f"{index.root}: {len(leaks)} patient(s) have scans in '{train_split}' and another split "
        f"({shown}{more}): scores on those splits will be optimistic (see 'octlens inspect')",
        DataWarning,
        stacklevel=3,
    )


def _train_loader(
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


def _class_weights(labels: list[int], num_classes: int) -> torch.Tensor:
    """Inverse-frequency weights, normalized so a balanced set gets all ones."""
    counts = torch.bincount(torch.tensor(labels), minlength=num_classes).float().clamp(min=1)
    return counts.sum() / (num_classes * counts)


def _patience_exhausted(history: list[dict[str, Any]], patience: int | None) -> bool:
    if patience is None or not history:
        return False
    best_epoch = min(history, key=lambda r: r["val_loss"])["epoch"]
    return history[-1]["epoch"] - best_epoch >= patience


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _default_workers(device: torch.device) -> int:
    """Data-loading processes: none when training on the CPU, up to 8 for a GPU.

    On the CPU the workers would take cores from the model's own threads, and decoding a scan
    costs a few ms against tens of ms of compute: ``benchmarks/train_throughput.py`` measured the
    in-process loop at 0.99 of the bare step for resnet18@128 on 2 cores, and 0.73 with a worker.
    """
    if device.type == "cpu":
        return 0
    return max(1, min(8, (os.cpu_count() or 2) - 1))


def _load_resumable(last_path: Path, config: TrainConfig, console: Console) -> Checkpoint:
    if not last_path.exists():
        raise OctlensError(f"{last_path}: no checkpoint to resume from")
    checkpoint = load_checkpoint(last_path)
    # The workers are this machine's choice (and bounded by its cores), not the run's.
    settings = checkpoint.meta.get("config")
    recorded = {
        **(settings if isinstance(settings, dict) else {}),
        "num_workers": config.num_workers,
    }
    try:
        saved = TrainConfig.model_validate(recorded)
    except ValidationError as error:
        raise OctlensError(
            f"{last_path}: its recorded settings are not valid ({first_problem(error)}); start "
            "a new run with another --out"
        ) from None
    changed = [
        name
        for name in TrainConfig.model_fields
        if name not in _RESUMABLE_CHANGES and _setting(saved, name) != _setting(config, name)
    ]
    if changed == ["epochs"]:
        raise OctlensError(
            f"{last_path}: cannot resume with --epochs {config.epochs}: the run started with "
            f"--epochs {saved.epochs}, and its learning-rate schedule (warm-up, then cosine "
            f"decay to 0 at epoch {saved.epochs}) spans them; resume with --epochs "
            f"{saved.epochs}, or train on from these weights in a new run (--init {last_path} "
            "--out NEW)"
        )
    if changed:
        raise OctlensError(
            f"{last_path}: cannot resume with different settings ({', '.join(changed)}); "
            "start a new run with another --out"
        )
    if saved.out.resolve() != config.out.resolve():
        console.print(f"note: the run was written at {saved.out}; it continues in {config.out}")
    return checkpoint


def _setting(config: TrainConfig, name: str) -> object:
    """A setting as resumption compares it: a file by where it resolves to."""
    value = getattr(config, name)
    return Path(value).resolve() if name in _FILE_SETTINGS and value is not None else value


@contextmanager
def _restoring(resumed: Checkpoint) -> Iterator[None]:
    """Restoring a run's state from ``last``: an edited or foreign file (no history, an optimizer
    state of another shape) is one line naming it, not a traceback from torch."""
    try:
        yield
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, RuntimeError) as error:
        first = str(error).splitlines()[0] if str(error) else "invalid value"
        raise OctlensError(
            f"{resumed.path}: not a checkpoint this run can resume from ({type(error).__name__}: "
            f"{first}); start a new run with another --out"
        ) from None


def _check_same_data(resumed: Checkpoint, config: TrainConfig, fingerprint: str) -> None:
    """A run resumes only on the training scans it started with, wherever they now are."""
    saved = resumed.meta["config"]["data"]
    recorded = resumed.meta.get("data", {}).get("train_fingerprint")
    same_place = Path(saved).resolve() == Path(config.data).resolve()
    if recorded is None and same_place:  # a run from before fingerprints: trust the path
        return
    if recorded != fingerprint:
        changed = "has changed since" if same_place else "is not the data"
        raise OctlensError(
            f"{config.data}: the training split {changed} this run was trained on "
            f"({saved}); start a new run with another --out"
        )


def _run_metadata(
    config: TrainConfig, index: DatasetIndex, normalization: Normalization, n_train: int, n_val: int
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
        "data": {"root": str(index.root), "train_images": n_train, "val_images": n_val},
        "config": config.model_dump(mode="json"),
    }
