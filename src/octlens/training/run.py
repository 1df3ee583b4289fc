"""A training run on disk: its best checkpoint, the model it holds, and where its results go.

Every stage after training (evaluation, explanations, the audit, the report) starts from a run
folder; :class:`Run` is the one place that turns it into a model on a device, the transform its
scans need, the data it may be scored on, and the folders its results are written to::

    run = Run.load("runs/r18")                    # a run folder, or a checkpoint file in one
    model = run.model(resolve_precision("auto", torch.device("cpu")))
    index = run.data("data/synth")                # refused if it has a class the run lacks
    samples = run.samples(index, "test")          # the data's split, or one the run carved
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch
from torch import nn
from torchvision.transforms import v2

from octlens.data.index import DatasetIndex, Sample, scan
from octlens.data.splits import split_samples
from octlens.errors import OctlensError
from octlens.models import is_vit
from octlens.runtime import PrecisionPlan
from octlens.training.checkpoint import Checkpoint, CheckpointMeta, load_checkpoint


class Run:
    """A run folder and its best checkpoint (or the checkpoint file it was given)."""

    def __init__(self, checkpoint: Checkpoint) -> None:
        self.checkpoint = checkpoint
        self.folder = checkpoint.path.parent

    @classmethod
    def load(cls, path: str | Path) -> Run:
        return cls(load_checkpoint(path))

    @functools.cached_property
    def info(self) -> CheckpointMeta:
        """The checkpoint's metadata, checked and typed."""
        return CheckpointMeta.model_validate(self.checkpoint.meta)

    @property
    def name(self) -> str:
        """The model's name as trained (``resnet18``, ``vit_tiny``, ...)."""
        return self.info.model.name

    @property
    def classes(self) -> list[str]:
        return self.checkpoint.classes

    @property
    def img_size(self) -> int:
        return self.checkpoint.img_size

    def model(self, plan: PrecisionPlan | None = None) -> nn.Module:
        """The trained model in eval mode, on the plan's device, channels-last if a CNN."""
        model = self.checkpoint.build_model()
        if plan is not None:
            model.to(plan.device)
            if not is_vit(model):
                model.to(memory_format=torch.channels_last)
        return model

    def eval_transform(self) -> v2.Compose:
        return self.checkpoint.eval_transform()

    def data(self, root: str | Path, verbose: bool = True) -> DatasetIndex:
        """The dataset at ``root`` labelled by the run's classes. It may hold only some of them
        (matched by name; an empty class folder is such a class), but a class the run does not
        know is refused: no answer of the model could be right for it."""
        index = scan(root, verbose=verbose, empty_classes=True)
        unknown = [name for name in index.classes if name not in self.classes]
        if unknown:
            raise OctlensError(
                f"{root}: class(es) {', '.join(unknown)} are not among the checkpoint's "
                f"{self.classes} ({self.checkpoint.path})"
            )
        return index.relabelled(self.classes)

    def samples(self, index: DatasetIndex, split: str) -> list[Sample]:
        """``split`` of ``index``: the data's own, or one this run carved from its training data."""
        return split_samples(index, split, self.folder)

    def eval_dir(self, split: str) -> Path:
        return self.folder / "eval" / split

    def audit_dir(self, split: str) -> Path:
        return self.folder / "audit" / split
