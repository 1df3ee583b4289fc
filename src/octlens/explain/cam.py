"""Class activation maps from a layer's activations A (B, K, h, w) and gradients G = dy_c/dA.

All four share one hook and one backward pass; they differ only in how A and G combine:

* Grad-CAM (Selvaraju et al. 2017): ``ReLU(sum_k mean_ij(G_k) A_k)``
* HiResCAM (Draelos & Carin 2020): ``ReLU(sum_k G_k * A_k)``, element-wise, no averaging
* LayerCAM (Jiang et al. 2021): ``ReLU(sum_k ReLU(G_k) * A_k)``
* Grad-CAM++ (Chattopadhay et al. 2018): ``ReLU(sum_k w_k A_k)`` with
  ``w_k = sum_ij ReLU(G_kij) a_kij``, ``a = G^2 / (2 G^2 + sum_ij(A_k) G^3)`` (0 where G = 0),
  the closed form for an exponential score.

Every CAM takes any named layer (``target_layer="layer3"``; ``--layer`` in the CLI): an earlier
stage has a finer grid (8 x 8 at 128 px for a ResNet's ``layer3``, against 4 x 4 for ``layer4``),
whether or not it finds lesions better (``benchmarks/cam_layers.py`` measures it).
:class:`LayerCAMFused` fuses LayerCAM over several stages, as its paper does. For a ViT, tokens
are reshaped to the patch grid and prefix (CLS) tokens dropped first.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from octlens.errors import OctlensError
from octlens.explain.base import (
    Explainer,
    forward_hooks,
    predicted_unless_given,
    preserved_state,
    target_scores,
)
from octlens.explain.layers import default_layers, resolve_layer, tokens_to_grid
from octlens.models import is_vit
from octlens.runtime import PrecisionPlan


class _GradientCAM(Explainer):
    """Captures the target layer's output, differentiates the target scores, combines.

    Args:
        model: a CNN or a timm ViT, in any mode (explaining runs it in eval mode and restores it).
        target_layer: the module whose output ``A`` is explained, by object or dotted name;
            default: a CNN's last feature stage, a ViT's last ``blocks[-1].norm1`` (tokens are
            reshaped to the patch grid, prefix tokens dropped).
        precision: ``auto`` (fp32 on CPUs, AMP on CUDA), ``fp32``, ``bf16``, ``fp16``, or a plan.
    """

    takes_layer = True

    def __init__(
        self,
        model: nn.Module,
        target_layer: nn.Module | str | None = None,
        precision: str | PrecisionPlan = "auto",
    ) -> None:
        super().__init__(model, precision)
        self.target_layer = resolve_layer(model, target_layer)

    def activations_and_gradients(
        self, images: torch.Tensor, targets: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """A and dy/dA at the target layer as feature maps (B, K, h, w), and the targets."""
        (captured,), targets = layer_gradients(self.model, [self.target_layer], images, targets)
        return *captured, targets

    def _explain(self, images, targets):
        activations, gradients, targets = self.activations_and_gradients(images, targets)
        return torch.relu(self.combine(activations, gradients)), targets

    @staticmethod
    def combine(activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


def layer_gradients(
    model: nn.Module,
    layers: Sequence[nn.Module],
    images: torch.Tensor,
    targets: torch.Tensor | None,
) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], torch.Tensor]:
    """A and dy/dA (B, K, h, w) fp32 at each of ``layers`` (in forward order), from one forward
    and one backward pass, and the targets.

    Parameters are frozen for the pass (the caller restores them) and the first capture is made
    a leaf that needs a gradient, so autograd records only from the earliest layer on: the
    layers before it run as in inference, and the backward pass is only the model's tail.
    """
    captured: list[torch.Tensor] = []

    def keep(module: nn.Module, inputs: object, output: torch.Tensor) -> torch.Tensor:
        if not isinstance(output, torch.Tensor):
            raise OctlensError(
                f"layer '{_name_of(model, module)}' returns {type(output).__name__}, not a "
                "tensor: name a convolutional stage or a transformer block"
            )
        if not captured:
            output = output.detach().requires_grad_()
        captured.append(output)
        return output.clone()  # later in-place ops change the clone, never the capture

    with preserved_state(model), torch.enable_grad():
        for param in model.parameters():
            param.requires_grad_(False)
        with forward_hooks([(layer, keep) for layer in layers]):
            logits = model(images)
            targets = predicted_unless_given(logits, targets)
            scores = target_scores(logits, targets).sum()
        if len(captured) != len(layers):  # a layer the forward pass skips, or runs twice
            names = ", ".join(f"'{_name_of(model, layer)}'" for layer in layers)
            raise OctlensError(
                f"the layer(s) {names} ran {len(captured)} time(s) in the forward pass, not once "
                "each: name a module the model runs exactly once"
            )
        gradients = torch.autograd.grad(scores, captured)
    pairs = []
    for layer, activations, gradient in zip(layers, captured, gradients, strict=True):
        activations = activations.detach()
        if is_vit(model) and activations.dim() == 3:
            activations = tokens_to_grid(activations, model, images.shape[-2:])
            gradient = tokens_to_grid(gradient, model, images.shape[-2:])
        if activations.dim() != 4:
            raise OctlensError(
                f"layer '{_name_of(model, layer)}' ({type(layer).__name__}) gives outputs of shape "
                f"{tuple(activations.shape)}, not a feature map (B, C, h, w): name a "
                "convolutional stage or a transformer block"
            )
        pairs.append((activations.float(), gradient.float()))
    return pairs, targets


def _name_of(model: nn.Module, layer: nn.Module) -> str:
    return next((name for name, module in model.named_modules() if module is layer), "?")


class GradCAM(_GradientCAM):
    r"""Grad-CAM (Selvaraju et al., 2017): channels weighted by their mean gradient.

    .. math:: L^c = \mathrm{ReLU}\Big(\sum_k \frac{1}{hw}\sum_{ij}
        \frac{\partial y^c}{\partial A^k_{ij}}\, A^k\Big)

    Takes ``model``, ``target_layer`` and ``precision``, as every CAM does (see the base).

    Example::

        explanation = GradCAM(model)(images)            # targets: the predicted classes
        explanation.raw.shape                           # (B, H, W), fp32, at input size
    """

    @staticmethod
    def combine(activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
        weights = gradients.mean(dim=(2, 3), keepdim=True)
        return (weights * activations).sum(dim=1)


class HiResCAM(_GradientCAM):
    r"""HiResCAM (Draelos & Carin, 2020): gradients times activations, element-wise.

    .. math:: L^c = \mathrm{ReLU}\Big(\sum_k \frac{\partial y^c}{\partial A^k} \odot A^k\Big)

    Faithful to the score when the head is linear in the activations (then it sums to the
    score up to the bias); equal to Grad-CAM after global average pooling and a linear head.

    Takes ``model``, ``target_layer`` and ``precision``, as every CAM does (see the base).

    Example::

        maps = HiResCAM(model, target_layer="layer4")(images, targets=[0, 2]).normalized
    """

    @staticmethod
    def combine(activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
        return (gradients * activations).sum(dim=1)


class LayerCAM(_GradientCAM):
    r"""LayerCAM (Jiang et al., 2021): each location weighted by its positive gradient.

    .. math:: L^c = \mathrm{ReLU}\Big(\sum_k \mathrm{ReLU}\Big(
        \frac{\partial y^c}{\partial A^k}\Big) \odot A^k\Big)

    Usable at early, high-resolution layers, where channel-averaged weights wash out.

    Takes ``model``, ``target_layer`` and ``precision``, as every CAM does (see the base).

    Example::

        maps = LayerCAM(model, target_layer="layer2")(images).raw
    """

    @staticmethod
    def combine(activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
        return (torch.relu(gradients) * activations).sum(dim=1)


class GradCAMPlusPlus(_GradientCAM):
    r"""Grad-CAM++ (Chattopadhay et al., 2018): pixel-wise weights of positive gradients.

    .. math:: L^c = \mathrm{ReLU}\Big(\sum_k w_k A^k\Big),\quad
        w_k = \sum_{ij} \alpha^k_{ij}\, \mathrm{ReLU}(G^k_{ij}),\quad
        \alpha^k_{ij} = \frac{(G^k_{ij})^2}{2 (G^k_{ij})^2 + \sum_{ab} A^k_{ab} (G^k_{ij})^3}

    with :math:`G = \partial y^c / \partial A` (the closed form for an exponential score;
    :math:`\alpha = 0` where :math:`G = 0`). Meant for several instances of a class in a scan.

    Takes ``model``, ``target_layer`` and ``precision``, as every CAM does (see the base).

    Example::

        maps = GradCAMPlusPlus(model)(images).normalized
    """

    eps = 1e-6

    @staticmethod
    def combine(activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
        squared = gradients.pow(2)
        cubed = squared * gradients
        sum_activations = activations.sum(dim=(2, 3), keepdim=True)
        alpha = squared / (2 * squared + sum_activations * cubed + GradCAMPlusPlus.eps)
        alpha = torch.where(gradients != 0, alpha, torch.zeros_like(alpha))
        weights = (torch.relu(gradients) * alpha).sum(dim=(2, 3), keepdim=True)
        return (weights * activations).sum(dim=1)


class LayerCAMFused(Explainer):
    r"""LayerCAM fused over several stages (Jiang et al., 2021): the fine grid of an early stage
    where the last stage's says only "this quarter of the scan".

    Each stage's LayerCAM :math:`L_l` (one forward and one backward pass for all of them) is
    upsampled to the input, scaled as the paper scales its shallow layers,
    :math:`\hat L_l = \tanh(\gamma L_l / \max L_l)` with :math:`\gamma = 2`, so no stage
    dominates by its range alone, and the stages are fused by their element-wise maximum.

    Args:
        model: a CNN or a timm ViT.
        target_layers: the modules (or dotted names) to fuse; default: a CNN's last three
            feature stages (``layer2``, ``layer3``, ``layer4`` of a ResNet), a ViT's last three
            blocks' ``norm1``.
        precision: as for every explainer.

    Example::

        maps = LayerCAMFused(model)(images).raw       # (B, H, W) at the input size
    """

    title = "fused LayerCAM"
    gamma = 2.0

    def __init__(
        self,
        model: nn.Module,
        target_layers: Sequence[nn.Module | str] | None = None,
        precision: str | PrecisionPlan = "auto",
    ) -> None:
        super().__init__(model, precision)
        chosen = default_layers(model, 3) if target_layers is None else target_layers
        self.target_layers = [resolve_layer(model, layer) for layer in chosen]

    def _explain(self, images, targets):
        captured, targets = layer_gradients(self.model, self.target_layers, images, targets)
        fused = None
        for activations, gradients in captured:
            stage = torch.relu(LayerCAM.combine(activations, gradients))
            stage = F.interpolate(
                stage[:, None], size=images.shape[-2:], mode="bilinear", align_corners=False
            )[:, 0]
            peak = stage.flatten(1).amax(dim=1).clamp_min(1e-12)[:, None, None]
            scaled = torch.tanh(self.gamma * stage / peak)
            fused = scaled if fused is None else torch.maximum(fused, scaled)
        return fused, targets
