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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file
from torch import nn

from octlens import __version__
from octlens.errors import OctlensError
from octlens.models import create_model

FORMAT = "octlens-checkpoint"
_META_KEY = "octlens"
_MODEL, _OPTIMIZER = "model.", "optimizer."


@dataclass
class Checkpoint:
    path: Path
    meta: dict[str, Any]
    tensors: dict[str, torch.Tensor]

    @property
    def classes(self) -> list[str]:
        return list(self.meta["classes"])

    def model_state(self) -> dict[str, torch.Tensor]:
        return {k[len(_MODEL) :]: v for k, v in self.tensors.items() if k.startswith(_MODEL)}

    def build_model(self) -> nn.Module:
        """The trained model, in eval mode, from the recipe in the metadata."""
        recipe = self.meta["model"]
        model = create_model(
            recipe["name"],
            num_classes=len(self.classes),
            in_chans=1,
            img_size=recipe.get("img_size"),
            patch_size=recipe.get("patch_size"),
            **recipe.get("kwargs", {}),
        )
        model.load_state_dict(self.model_state())
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
    _atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata={_META_KEY: text}))
    _atomic_write(
        path.with_suffix(".json"),
        lambda tmp: Path(tmp).write_text(json.dumps(meta, indent=2, default=str)),
    )


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
    except (KeyError, json.JSONDecodeError):
        raise OctlensError(f"{path}: a safetensors file, but not an octlens checkpoint") from None
    if meta.get("format") != FORMAT:
        raise OctlensError(f"{path}: a safetensors file, but not an octlens checkpoint")
    return Checkpoint(path=path, meta=meta, tensors=tensors)


def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    write(str(tmp))
    os.replace(tmp, path)
