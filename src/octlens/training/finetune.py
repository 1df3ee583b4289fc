"""Fine-tuning: a run that starts from another run's weights, and what it may change of them.

Three ways to reuse weights, as the transfer-learning literature uses them:

- **full fine-tuning** with layer-wise learning-rate decay (BEiT, MAE): the layer ``d`` steps
  below the classifier learns at ``lr * layer_decay**d``, so the early, generic features move
  least. timm groups the layers: blocks for a ViT, residual blocks for a ResNet (``group_matcher``).
- **a linear probe** (``freeze="backbone"``): only the classifier learns; the backbone's weights,
  its BatchNorm statistics and its dropout stay as they were (its modules are kept in eval mode).
- **from an octlens run** (``init``): the run's best checkpoint (or a checkpoint file) gives the
  weights, the normalization the weights were trained with, and the model settings the new
  config leaves unset. Its classifier is kept when the classes are the same, in the same order,
  and made new otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from timm.optim import param_groups_layer_decay, param_groups_weight_decay
from torch import nn

from octlens.models import is_classifier, load_pretrained_state
from octlens.training.checkpoint import Checkpoint, load_checkpoint
from octlens.training.config import TrainConfig

#: The layer decay of a run that starts from weights and does not say: BEiT's and MAE's range.
FINE_TUNE_LAYER_DECAY = 0.75


@dataclass(frozen=True)
class InitRun:
    """The run a new run starts from: its checkpoint, read once."""

    checkpoint: Checkpoint

    def recipe(self) -> dict[str, Any]:
        """The model settings of the run, as :class:`TrainConfig` fields."""
        model = self.checkpoint.meta["model"]
        return {
            "model": model["name"],
            "img_size": self.checkpoint.img_size,
            "patch_size": model.get("patch_size"),
            "model_kwargs": model.get("kwargs", {}),
        }

    def load_into(self, model: nn.Module, classes: list[str]) -> dict[str, Any]:
        """Copy the weights into ``model`` (a new head unless ``classes`` are the run's); return
        what the new run records about where it started."""
        state = self.checkpoint.model_state()
        same_classes = self.checkpoint.classes == classes
        if not same_classes:
            state = {key: value for key, value in state.items() if not is_classifier(model, key)}
        load_pretrained_state(model, state, self.checkpoint.path)
        meta = self.checkpoint.meta
        return {
            "checkpoint": str(self.checkpoint.path),
            "epoch": meta["epoch"],
            "model": meta["model"],
            "classes": self.checkpoint.classes,
            "data": meta.get("data", {}).get("root"),
            "head": "kept" if same_classes else "new",
        }


def read_init(config: TrainConfig) -> tuple[TrainConfig, InitRun | None]:
    """The run ``config.init`` names, and ``config`` with that run's model settings in the
    fields it leaves unset (so ``--init RUN`` alone fine-tunes the same architecture). With
    another ``model`` given, nothing is inherited: the run's patch size and model arguments
    belong to its own architecture (and its weights will not fit: a one-line error says so)."""
    if config.init is None:
        return config, None
    init = InitRun(load_checkpoint(config.init))
    if "model" in config.model_fields_set:
        return config, init
    unset = {
        name: value for name, value in init.recipe().items() if name not in config.model_fields_set
    }
    return config.model_copy(update=unset), init


def layer_decay(config: TrainConfig) -> float:
    """The layer decay a run uses: as given, else :data:`FINE_TUNE_LAYER_DECAY` when it fine-tunes
    every layer from weights, else 1 (one learning rate)."""
    if config.layer_decay is not None:
        return config.layer_decay
    from_weights = config.init is not None or config.pretrained is not None
    return FINE_TUNE_LAYER_DECAY if from_weights and config.freeze == "none" else 1.0


def freeze_backbone(model: nn.Module) -> list[nn.Module]:
    """Stop the gradients of everything but the classifier; return the frozen top-level modules,
    which :func:`train_mode` keeps in eval mode."""
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(is_classifier(model, name))
    return [
        module for name, module in model.named_children() if not is_classifier(model, f"{name}.")
    ]


def train_mode(model: nn.Module, frozen: list[nn.Module]) -> None:
    """Training mode, except the frozen modules: their BatchNorm statistics stay put."""
    model.train()
    for module in frozen:
        module.eval()


def parameter_groups(
    model: nn.Module, lr: float, weight_decay: float, decay: float
) -> list[dict[str, Any]]:
    """AdamW groups of the trainable parameters: no weight decay on norms and biases, and each
    layer's learning rate scaled by ``decay`` per layer below the head."""
    if decay == 1.0:
        groups = param_groups_weight_decay(model, weight_decay)
    else:
        no_decay: set[str] = getattr(model, "no_weight_decay", set)()
        groups = param_groups_layer_decay(
            model, weight_decay, no_weight_decay_list=no_decay, layer_decay=decay
        )
    for group in groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
    return [group for group in groups if group["params"]]
