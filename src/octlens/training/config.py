"""The training configuration: every choice of a run, validated, and saved with its checkpoints."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Precision = Literal["auto", "fp32", "bf16", "fp16"]
Balance = Literal["none", "loss", "sampler"]


class TrainConfig(BaseModel):
    """What ``octlens train`` and :func:`octlens.training.train` take."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    data: Path
    out: Path
    model: str = "resnet18"
    img_size: int = Field(224, ge=16, le=4096)
    patch_size: int | None = Field(None, ge=1)
    model_kwargs: dict[str, Any] = Field(default_factory=dict)
    pretrained: str | None = None

    train_split: str = "train"
    val_split: str = "val"
    val_fraction: float = Field(0.15, gt=0, lt=1, description="carved by patient when no val split")
    test_fraction: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="carved by patient (before val) when the data has no test split",
    )

    epochs: int = Field(10, ge=1)
    batch_size: int = Field(32, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.05, ge=0)
    warmup_epochs: float = Field(1.0, ge=0)
    label_smoothing: float = Field(0.1, ge=0, lt=1)
    balance: Balance = "none"
    patience: int | None = Field(None, ge=1, description="epochs without val-loss improvement")

    precision: Precision = "auto"
    device: str | None = None
    num_workers: int | None = Field(None, ge=0)
    seed: int = 0
    strict: bool = False
