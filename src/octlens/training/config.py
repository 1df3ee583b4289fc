"""The training configuration: every choice of a run, validated, and saved with its checkpoints."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Precision = Literal["auto", "fp32", "bf16", "fp16"]
Balance = Literal["none", "loss", "sampler"]
Freeze = Literal["none", "backbone"]


#: The largest seed: numpy's generators take seeds of 32 bits, and every epoch's seed
#: (``seed * 1_000_003 + epoch``) must stay within torch's 64.
MAX_SEED = 2**32 - 1
#: Data-loading processes per CPU core at most: more only queue for the same cores, and each
#: holds its own copy of torch in memory (``--workers 100000`` would start that many).
WORKERS_PER_CORE = 4


def max_workers() -> int:
    """The most data-loading processes this machine is given, by its CPU count."""
    return WORKERS_PER_CORE * (os.cpu_count() or 1)


class TrainConfig(BaseModel):
    """What ``octlens train`` and :func:`octlens.training.train` take."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    data: Path = Field(description="dataset folder or MedMNIST .npz")
    out: Path = Field(description="run folder for checkpoints, history and curves")
    model: str = Field("resnet18", description="resnet18, resnet50, vit_tiny/small/base or timm")
    img_size: int = Field(224, ge=16, le=4096, description="input size in pixels (square)")
    patch_size: int | None = Field(None, ge=1, description="ViT patch size")
    model_kwargs: dict[str, Any] = Field(
        default_factory=dict, description="KEY=VALUE for the timm model, e.g. depth=6"
    )
    pretrained: str | None = Field(None, description="weights file, or 'hub'")
    init: Path | None = Field(
        None,
        description="start from an octlens run's weights (run folder or checkpoint); the model "
        "settings not given are the run's",
    )
    freeze: Freeze = Field(
        "none", description="none, or backbone: train the classifier only (a linear probe)"
    )
    layer_decay: float | None = Field(
        None,
        gt=0,
        le=1,
        description="learning-rate factor per layer from the head down (default: 0.75 when "
        "starting from weights, 1 from scratch)",
    )

    teacher: Path | None = Field(
        None,
        description="distil from a trained octlens run (run folder or checkpoint) with the same "
        "classes: the student also matches its answers",
    )
    distill_weight: float = Field(
        0.5, ge=0, le=1, description="share of the loss that matches the teacher (with --teacher)"
    )
    distill_temperature: float = Field(
        2.0, gt=0, le=100, description="softmax temperature of the teacher's answers"
    )

    patients: Path | None = Field(
        None, description="CSV with columns file,patient: which scans share a patient"
    )
    patient_pattern: str | None = Field(
        None, description="regex whose group is the patient id in each scan's path"
    )

    train_split: str = Field("train", description="the split to train on")
    val_split: str = Field("val", description="carved from train by patient if absent")
    val_fraction: float = Field(0.15, gt=0, lt=1, description="carved by patient when no val split")
    test_fraction: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="carved by patient (before val) when the data has no test split",
    )

    epochs: int = Field(10, ge=1, description="epochs to train")
    batch_size: int = Field(
        32, ge=1, description="images per step (under torchrun: over all processes)"
    )
    lr: float = Field(1e-3, gt=0, description="peak learning rate (AdamW)")
    weight_decay: float = Field(0.05, ge=0, description="AdamW weight decay (not on norms/biases)")
    warmup_epochs: float = Field(1.0, ge=0, description="linear warm-up before cosine decay")
    label_smoothing: float = Field(0.1, ge=0, lt=1, description="cross-entropy label smoothing")
    augment: float = Field(
        1.0, ge=0, le=5, description="augmentation strength: 0 flips only, 1 the default ranges"
    )
    balance: Balance = Field("none", description="none, loss (weights) or sampler")
    patience: int | None = Field(
        None, ge=1, description="early stopping: epochs without a better val loss"
    )

    precision: Precision = Field("auto", description="auto, fp32, bf16 or fp16")
    device: str | None = Field(None, description="cpu, cuda, cuda:1 (default: the best there is)")
    num_workers: int | None = Field(
        None, ge=0, description=f"data-loading processes (at most {WORKERS_PER_CORE} per CPU core)"
    )
    seed: int = Field(
        0, ge=0, le=MAX_SEED, description="seeds the model, the splits and every epoch"
    )
    strict: bool = Field(False, description="unreadable images are errors")

    @field_validator("num_workers")
    @classmethod
    def _workers_this_machine_can_hold(cls, value: int | None) -> int | None:
        if value is not None and value > max_workers():
            raise ValueError(
                f"{value} processes, at most {max_workers()} on this machine "
                f"({WORKERS_PER_CORE} per CPU core)"
            )
        return value

    @model_validator(mode="after")
    def _weights_keep_their_sign(self) -> TrainConfig:
        """AdamW multiplies every decayed weight by ``1 - lr x weight_decay`` at each step: at 1
        or more the weights are zeroed or flip sign each step, and the run diverges or learns
        nothing, whatever the data; the settings are refused before an epoch is spent."""
        if self.lr * self.weight_decay >= 1:
            raise ValueError(
                f"--weight-decay {self.weight_decay:g} with --lr {self.lr:g}: AdamW multiplies "
                f"every weight by 1 - lr x weight decay = {1 - self.lr * self.weight_decay:.3g} "
                "at each step; lr x weight decay must stay below 1 (a weight decay of 0.01-0.3 "
                "is usual)"
            )
        return self

    @model_validator(mode="after")
    def _one_start(self) -> TrainConfig:
        if self.init is not None and self.pretrained is not None:
            raise ValueError("give --init (an octlens run) or --pretrained (weights), not both")
        if self.freeze != "none" and self.init is None and self.pretrained is None:
            raise ValueError("--freeze needs weights to keep: add --init RUN or --pretrained")
        return self
