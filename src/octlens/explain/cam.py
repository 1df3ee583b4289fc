"""Class activation maps from a layer's activations A (B, K, h, w) and gradients G = dy_c/dA.

All four share one hook and one backward pass; they differ only in how A and G combine:

* Grad-CAM (Selvaraju et al. 2017): ``ReLU(sum_k mean_ij(G_k) A_k)``
* HiResCAM (Draelos & Carin 2020): ``ReLU(sum_k G_k * A_k)``, element-wise, no averaging
* LayerCAM (Jiang et al. 2021): ``ReLU(sum_k ReLU(G_k) * A_k)``
* Grad-CAM++ (Chattopadhay et al. 2018): ``ReLU(sum_k w_k A_k)`` with
  ``w_k = sum_ij ReLU(G_kij) a_kij``, ``a = G^2 / (2 G^2 + sum_ij(A_k) G^3)`` (0 where G = 0),
  the closed form for an exponential score.

For a ViT, tokens are reshaped to the patch grid and prefix (CLS) tokens dropped first.
"""

from __future__ import annotations

import torch
from torch import nn

from octlens.explain.base import (
    Explainer,
    forward_hooks,
    predicted_unless_given,
    preserved_state,
    target_scores,
)
from octlens.explain.layers import resolve_layer, tokens_to_grid
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
        """A and dy/dA at the target layer as feature maps (B, K, h, w), and the targets.

        Parameters are frozen for the pass (the base restores them) and the capture is made a
        leaf that needs a gradient, so autograd records only from the target layer on: the
        layers before it run as in inference, and the backward pass is only the model's tail.
        """
        captured: list[torch.Tensor] = []

        def keep(module: nn.Module, inputs: object, output: torch.Tensor) -> torch.Tensor:
            leaf = output.detach().requires_grad_()
            captured.append(leaf)
            return leaf.clone()  # later in-place ops change the clone, never the capture

        with preserved_state(self.model), torch.enable_grad():
            for param in self.model.parameters():
                param.requires_grad_(False)
            with forward_hooks([(self.target_layer, keep)]):
                logits = self.model(images)
                targets = predicted_unless_given(logits, targets)
                scores = target_scores(logits, targets).sum()
            (gradients,) = torch.autograd.grad(scores, captured[0])
        activations = captured[0].detach()
        if is_vit(self.model):
            size = images.shape[-2:]
            activations = tokens_to_grid(activations, self.model, size)
            gradients = tokens_to_grid(gradients, self.model, size)
        return activations.float(), gradients.float(), targets

    def _explain(self, images, targets):
        activations, gradients, targets = self.activations_and_gradients(images, targets)
        return torch.relu(self.combine(activations, gradients)), targets

    @staticmethod
    def combine(activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


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
