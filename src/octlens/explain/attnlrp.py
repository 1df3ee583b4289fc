r"""AttnLRP (Achtibat et al., ICML 2024): layer-wise relevance propagation through timm ViTs.

LRP hands the target logit back layer by layer, each by a rule that conserves it (the rules for
CNNs are in :mod:`octlens.explain.lrp`). A transformer adds three operations the CNN rules do
not cover, and AttnLRP gives each one:

- **element-wise non-linearities** (the MLP's GELU): the *identity rule*, :math:`R_x = R_y`;
- **LayerNorm**: the identity rule for the division by the standard deviation, which is held
  constant, so what is left, :math:`y = w (x - \bar x)/\sigma + b`, is linear in :math:`x`;
- **the attention products** :math:`QK^\top` and :math:`AV`: the *uniform rule*, each factor
  of a product gets half the product's relevance; through the softmax, relevance is its first-order
  Taylor term at the input, :math:`R_{x_i} = x_i (R_i - s_i \sum_j R_j)`, the rest absorbed as a
  bias.

Everything else after the first layer (the linear layers, residual sums, pooling) takes the
epsilon rule with :math:`\epsilon \to 0`. All of it runs as one gradient x input (the paper's
efficient form): a layer's relevance is its input times a *modified* gradient, so each rule is a
change to one gradient, made by a forward hook that keeps the layer's value exactly:

- GELU: the gradient becomes :math:`y/x` (so :math:`x \cdot g_x = y \cdot g_y`);
- LayerNorm: :math:`\sigma` detached;
- attention: the gradients of the query and key scaled by 1/4 (the two halvings, of :math:`AV`
  and then of :math:`QK^\top`, on their path) and of the value by 1/2, at the output of the
  ``qkv`` projection; the softmax keeps its own gradient, which is its Taylor rule.

The first layer (the patch embedding's convolution, or a convolutional stem's first one) takes a
rule of its own, as in LRP for CNNs, since the pixels are not activations: by default **Z-box**
(Montavon et al., 2017) with each image's own minimum and maximum as the bounds :math:`l \le x
\le h`, :math:`R_i = \sum_j \frac{x_i w_{ij} - l_i w^+_{ij} - h_i w^-_{ij}}{\sum_i (x_i w_{ij}
- l_i w^+_{ij} - h_i w^-_{ij})} R_j`, through zennit's ``ZBox``. With ``first_layer="epsilon"``
the pixels' relevance is :math:`x \odot g_x` as everywhere else (the paper's plain form): the
input is normalized, so a pixel darker than the mean (fluid, a cyst) has a negative value and its
relevance flips sign with it, which Z-box, measuring each pixel against the bounds, does not do.
The map is the pixels' relevance summed over channels: signed, at the input's full resolution.
Relevance is conserved up to what the biases (position embedding, class token, linear and norm
biases) and the softmax's Taylor remainder absorb.

``cp-lrp`` (:class:`CPLRP`) is the variant the AttnLRP authors use for ViTs (Ali et al., ICML
2022, *conservative propagation*): the attention weights are held constant, so relevance reaches
the tokens only through the values, and is conserved exactly where no bias absorbs any.

Maps are computed in fp32 whatever the precision plan, as for LRP on CNNs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import torch
from timm.layers import DropPath, LayerScale, Mlp, PatchDropout, PatchEmbed
from timm.layers.attention import Attention
from timm.models.vision_transformer import Block, VisionTransformer
from torch import nn
from zennit.core import Hook
from zennit.rules import Epsilon, ZBox

from octlens.errors import OctlensError
from octlens.explain.base import Explainer, forward_hooks, predicted_unless_given, target_scores
from octlens.explain.lrp import image_bounds
from octlens.models import is_vit
from octlens.runtime import PrecisionPlan

#: Modules the rules pass through unchanged: linear in gradient x input (BatchNorm in eval mode
#: is affine; ReLU's own gradient is its identity rule; pooling picks or averages tokens) or
#: the containers that call them.
_LINEAR_MODULES: tuple[type[nn.Module], ...] = (
    nn.Linear,
    nn.Conv2d,
    nn.BatchNorm2d,
    nn.ReLU,
    nn.Identity,
    nn.Dropout,
    nn.Sequential,
    nn.ModuleList,
    DropPath,
    PatchDropout,
    LayerScale,
    PatchEmbed,
    Block,
    Mlp,
    Attention,
    VisionTransformer,
)
#: Element-wise non-linearities that take the identity rule.
_ELEMENTWISE = (nn.GELU, nn.SiLU)
#: A denominator's smallest magnitude in the identity rule's ``y / x``.
_STABILIZER = 1e-10


class AttnLRP(Explainer):
    r"""AttnLRP (Achtibat et al., 2024) on a timm ViT: relevance of the input pixels.

    .. math:: R_z = z \odot \tilde\nabla_z f_c,\qquad R_x = \mathrm{rule}_{\mathrm{first}}(R_z)

    where :math:`z` is the first layer's output, :math:`\tilde\nabla` the gradient with the rules
    of the module docstring (identity at GELU and at LayerNorm's :math:`\sigma`, the uniform rule
    at the attention products), and the first layer's rule Z-box or epsilon.

    Args:
        model: a timm ViT; refused in one line if it holds a layer no rule covers (a gated MLP,
            RMSNorm, an attention-pooling head).
        first_layer: ``zbox`` (each image's minimum and maximum as bounds) or ``epsilon``
            (gradient x input, the paper's plain form).
        precision: accepted for a uniform interface; maps are fp32 always.

    Example::

        relevance = AttnLRP(vit)(images).raw   # signed, (B, H, W)
    """

    vit_only = True
    title: ClassVar[str] = "AttnLRP"
    #: The share of an attention block's relevance the query, key and value each receive.
    attention_shares: ClassVar[tuple[float, float, float]] = (0.25, 0.25, 0.5)

    @classmethod
    def supports(cls, model: nn.Module) -> bool:
        return is_vit(model) and not _modules_without_a_rule(model)

    def __init__(
        self,
        model: nn.Module,
        first_layer: str = "zbox",
        precision: str | PrecisionPlan = "auto",
    ) -> None:
        super().__init__(model, precision)
        missing = _modules_without_a_rule(model)
        if missing:
            raise OctlensError(
                f"{self.title} has no rule for {', '.join(missing)} in {type(model).__name__} "
                "(it covers timm's VisionTransformer with LayerNorm, a GELU MLP and token or "
                "average pooling); for this model use legrad, rollout or reciprocam"
            )
        if first_layer not in FIRST_LAYER_RULES:
            raise OctlensError(
                f"first_layer={first_layer}: choose {' or '.join(FIRST_LAYER_RULES)}"
            )
        self.first_layer = first_layer
        convolutions = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
        if not convolutions:
            raise OctlensError(
                f"{self.title} needs the patch embedding to be a convolution, the first layer "
                f"it takes the {first_layer} rule at; {type(model).__name__} has none"
            )
        self.input_layer = convolutions[0]

    def _explain(
        self, images: torch.Tensor, targets: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        images = images.float().detach()
        first: list[torch.Tensor] = []
        hooks: list[tuple[nn.Module, Callable[..., object]]] = [
            *rule_hooks(self.model, self.attention_shares),
            (self.input_layer, lambda module, inputs, output: first.append(output)),
        ]
        rule = FIRST_LAYER_RULES[self.first_layer](images)
        with torch.autocast(images.device.type, enabled=False), torch.enable_grad():
            with forward_hooks(hooks):
                logits = self.model(images.requires_grad_())
                targets = predicted_unless_given(logits, targets)
                (gradient,) = torch.autograd.grad(target_scores(logits, targets).sum(), first[0])
            relevance = (first[0] * gradient).detach()
            pixels = first_layer_relevance(self.input_layer, images, relevance, rule)
        return pixels.sum(dim=1), targets


class CPLRP(AttnLRP):
    """Conservative propagation (Ali et al., 2022), as the AttnLRP authors run it on ViTs:
    AttnLRP's rules outside attention, the attention weights held constant inside it."""

    title: ClassVar[str] = "CP-LRP"
    attention_shares: ClassVar[tuple[float, float, float]] = (0.0, 0.0, 1.0)


def _zbox(images: torch.Tensor) -> Hook:
    """Z-box bounded by each image's own minimum and maximum."""
    low, high = image_bounds(images)
    return ZBox(low=low, high=high)


#: The rules the first layer can take, each built for a batch of images.
FIRST_LAYER_RULES: dict[str, Callable[[torch.Tensor], Hook]] = {
    "zbox": _zbox,
    "epsilon": lambda images: Epsilon(),
}


def first_layer_relevance(
    layer: nn.Module, images: torch.Tensor, relevance: torch.Tensor, rule: Hook
) -> torch.Tensor:
    """The relevance of ``images`` (B, C, H, W) given that of ``layer``'s output, by a zennit
    ``rule`` (zennit's hooks turn the gradient into relevance: the output's relevance goes in as
    the output gradient, the input's comes out as the input gradient)."""
    handles = rule.register(layer)
    try:
        inputs = images.detach().requires_grad_()
        (pixels,) = torch.autograd.grad(layer(inputs), inputs, grad_outputs=relevance)
    finally:
        handles.remove()
    return pixels.detach()


def rule_hooks(
    model: nn.Module, attention_shares: tuple[float, float, float]
) -> list[tuple[nn.Module, Callable[..., torch.Tensor]]]:
    """Forward hooks that give ``model``'s gradient the AttnLRP rules (module docstring)."""
    hooks: list[tuple[nn.Module, Callable[..., torch.Tensor]]] = []
    for module in model.modules():
        if isinstance(module, nn.LayerNorm):
            hooks.append((module, _identity_layer_norm))
        elif isinstance(module, _ELEMENTWISE):
            hooks.append((module, _identity_elementwise))
        elif isinstance(module, Attention):
            hooks.append((module.qkv, _attention_shares(attention_shares)))
    return hooks


def _with_gradient_of(value: torch.Tensor, surrogate: torch.Tensor) -> torch.Tensor:
    """``value`` exactly, with the gradient of ``surrogate`` (same shape)."""
    return value.detach() + (surrogate - surrogate.detach())


def _identity_layer_norm(module: Any, inputs: tuple[torch.Tensor, ...], output: torch.Tensor):
    """LayerNorm's output, its gradient taken with the standard deviation held constant."""
    x = inputs[0]
    dims = tuple(range(-len(module.normalized_shape), 0))
    centred = x - x.mean(dim=dims, keepdim=True)
    deviation = (centred.pow(2).mean(dim=dims, keepdim=True) + module.eps).sqrt()
    normalized = centred / deviation.detach()
    if module.weight is not None:
        normalized = normalized * module.weight
    if module.bias is not None:
        normalized = normalized + module.bias
    return _with_gradient_of(output, normalized)


def _identity_elementwise(
    module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor
):
    """An activation's output, its gradient ``y / x`` (the identity rule)."""
    x = inputs[0]
    ratio = output / (x + torch.where(x >= 0, _STABILIZER, -_STABILIZER))
    return _with_gradient_of(output, x * ratio.detach())


def _attention_shares(shares: tuple[float, float, float]) -> Callable[..., torch.Tensor]:
    """A hook on an attention's ``qkv`` projection scaling the gradient of its query, key and
    value thirds (timm lays them out in that order along the last dimension)."""

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor):
        third = output.shape[-1] // 3
        scale = output.new_tensor(shares).repeat_interleave(third)
        return _with_gradient_of(output, output * scale)

    return hook


def _modules_without_a_rule(model: nn.Module) -> list[str]:
    """The kinds of modules in ``model`` that AttnLRP's rules do not cover, by class name."""
    covered = (*_LINEAR_MODULES, *_ELEMENTWISE, nn.LayerNorm)
    missing = {type(m).__name__ for m in model.modules() if not isinstance(m, covered)}
    if getattr(model, "attn_pool", None) is not None:
        missing.add("an attention-pooling head")
    return sorted(missing)
