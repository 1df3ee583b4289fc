"""Checkpoints: one safetensors file each, with the run's metadata inside it and beside it.

The metadata (classes, model recipe, image size, normalization, epoch, metrics, history, config)
is stored in the safetensors header, so weights and metadata are written in one atomic rename and
can never disagree; a ``.json`` copy is written beside it for people and tools. ``last`` also
holds the optimizer tensors and the scheduler and scaler state needed to resume. Nothing is ever
unpickled.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file
from torch import nn
from torchvision.transforms import v2

from octlens import __version__
from octlens.data.transforms import Normalization, eval_transform
from octlens.errors import OctlensError
from octlens.files import atomic_write, first_problem, write_text
from octlens.models import create_model

FORMAT = "octlens-checkpoint"
_META_KEY = "octlens"
_MODEL, _OPTIMIZER = "model.", "optimizer."

_Finite = Annotated[float, Field(allow_inf_nan=False)]


class _Recipe(BaseModel):
    name: str
    img_size: int | None = Field(None, ge=16, le=4096)
    patch_size: int | None = Field(None, ge=1)
    kwargs: dict[str, Any] = Field(default_factory=dict)


class _Normalization(BaseModel):
    mean: _Finite
    std: Annotated[float, Field(gt=0, allow_inf_nan=False)]


class CheckpointMeta(BaseModel):
    """The fields every reader of a checkpoint relies on, checked when it is loaded, so an
    edited or foreign file fails with one line instead of deep inside a model or a transform."""

    model_config = ConfigDict(extra="allow", protected_namespaces=())

    classes: Annotated[list[str], Field(min_length=1)]
    model: _Recipe
    img_size: int = Field(ge=16, le=4096)
    normalization: _Normalization
    epoch: int = Field(ge=1)


@dataclass
class Checkpoint:
    path: Path
    meta: dict[str, Any]
    tensors: dict[str, torch.Tensor]

    @property
    def classes(self) -> list[str]:
        return list(self.meta["classes"])

    @property
    def img_size(self) -> int:
        return int(self.meta["img_size"])

    @property
    def normalization(self) -> Normalization:
        return Normalization(**self.meta["normalization"])

    def eval_transform(self) -> v2.Compose:
        """What a scan (a grayscale PIL image) goes through before this model sees it."""
        return eval_transform(self.img_size, self.normalization)

    def model_state(self) -> dict[str, torch.Tensor]:
        return {k[len(_MODEL) :]: v for k, v in self.tensors.items() if k.startswith(_MODEL)}

    def build_model(self) -> nn.Module:
        """The trained model, in eval mode, from the recipe in the metadata."""
        recipe = self.meta["model"]
        try:
            model = create_model(
                recipe["name"],
                num_classes=len(self.classes),
                in_chans=1,
                img_size=recipe.get("img_size"),
                patch_size=recipe.get("patch_size"),
                **recipe.get("kwargs", {}),
            )
        except OctlensError as error:
            raise OctlensError(f"{self.path}: {error}") from None
        state = self.model_state()
        broken = [
            name
            for name, tensor in state.items()
            if tensor.is_floating_point() and not torch.isfinite(tensor).all()
        ]
        if broken:
            raise OctlensError(
                f"{self.path}: {len(broken)} weight tensor(s) hold NaN or infinity (e.g. "
                f"{broken[0]}): the run diverged or the file was altered"
            )
        try:
            model.load_state_dict(state)
        except RuntimeError as error:
            raise OctlensError(
                f"{self.path}: the weights do not fit the recorded model '{recipe['name']}' "
                f"({str(error).splitlines()[0]} ...)"
            ) from None
        return model.eval()

    def optimizer_state(self) -> dict[str, Any]:
        """Rebuild ``optimizer.state_dict()`` from its tensors and its JSON part."""
        saved = self.meta["training_state"]["optimizer"]
        # AdamW keeps ``step`` as a 0-d tensor; JSON gave it back as a number.
        state: dict[int, dict[str, Any]] = {
            int(index): {
                name: torch.tensor(float(value)) if name == "step" else value
                for name, value in scalars.items()
            }
            for index, scalars in saved["scalars"].items()
        }
        for key, tensor in self.tensors.items():
            if key.startswith(_OPTIMIZER):
                index, name = key[len(_OPTIMIZER) :].split(".", 1)
                state.setdefault(int(index), {})[name] = tensor
        return {"state": state, "param_groups": saved["param_groups"]}


def save_checkpoint(
    path: Path,
    model: nn.Module,
    meta: dict[str, Any],
    optimizer: torch.optim.Optimizer | None = None,
    training_state: dict[str, Any] | None = None,
) -> None:
    """Write ``path`` (``.safetensors``) and ``path.json`` atomically (temp file + rename)."""
    meta = {"format": FORMAT, "octlens_version": __version__, **meta}
    tensors = {_MODEL + k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    if optimizer is not None:
        saved = optimizer.state_dict()
        scalars: dict[str, dict[str, Any]] = {}
        for index, state in saved["state"].items():
            for name, value in state.items():
                if torch.is_tensor(value) and value.dim() > 0:
                    tensors[f"{_OPTIMIZER}{index}.{name}"] = value.contiguous().cpu()
                else:
                    scalar = value.item() if torch.is_tensor(value) else value
                    scalars.setdefault(str(index), {})[name] = scalar
        meta["training_state"] = {
            **(training_state or {}),
            "optimizer": {"scalars": scalars, "param_groups": saved["param_groups"]},
        }
    text = json.dumps(meta, default=str)
    atomic_write(path, lambda tmp: _save_file(tensors, tmp, {_META_KEY: text}))
    write_text(path.with_suffix(".json"), json.dumps(meta, indent=2, default=str))


def _save_file(tensors: dict[str, torch.Tensor], path: str, metadata: dict[str, str]) -> None:
    """safetensors' ``save_file``, its I/O failures raised as the ``OSError`` they are.

    safetensors writes in Rust and reports a full disk or a file-size limit (``ulimit -f``) as
    ``SafetensorError: Error while serializing: I/O error: File too large (os error 27)``;
    :func:`~octlens.files.atomic_write` turns an ``OSError`` into one line and keeps the old file.
    """
    try:
        save_file(tensors, path, metadata=metadata)
    except SafetensorError as error:
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        code = re.search(r"os error (\d+)|code: (\d+)", message)  # newer and older safetensors
        if code is None:
            raise OSError(0, message) from None
        number = int(code.group(1) or code.group(2))
        raise OSError(number, os.strerror(number)) from None


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read an octlens checkpoint; anything else is a one-line error naming the file."""
    path = Path(path)
    if path.is_dir():  # a run folder: its best checkpoint
        path = path / "best.safetensors"
    if not path.is_file():
        raise OctlensError(f"{path}: no such checkpoint")
    try:
        with safe_open(str(path), framework="pt") as handle:
            header = handle.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as error:
        raise OctlensError(f"{path}: not a safetensors checkpoint ({error})") from None
    try:
        meta = json.loads(header[_META_KEY])
    except (KeyError, json.JSONDecodeError, RecursionError):  # RecursionError: nested too deep
        raise OctlensError(f"{path}: a safetensors file, but not an octlens checkpoint") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise OctlensError(f"{path}: a safetensors file, but not an octlens checkpoint")
    try:
        checked = CheckpointMeta.model_validate(meta)
    except ValidationError as error:
        raise OctlensError(
            f"{path}: invalid checkpoint metadata ({first_problem(error)})"
        ) from None
    return Checkpoint(path=path, meta={**meta, **checked.model_dump()}, tensors=tensors)
