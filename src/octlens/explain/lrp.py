r"""Layer-wise relevance propagation for timm ResNets, through zennit.

LRP (Bach et al., 2015; Montavon et al., 2019) hands the target logit back through the network
layer by layer, each layer by a rule that conserves it. For a layer
:math:`z_k = \sum_j x_j w_{jk} + b_k` and the relevance :math:`R_k` of its outputs:

- **epsilon**: :math:`R_j = \sum_k \frac{x_j w_{jk}}{z_k + \epsilon\,\mathrm{sign}(z_k)} R_k`;
- **z+**: the same with only the positive contributions :math:`x_j w^+_{jk}` (ReLU inputs are
  non-negative), which keeps maps positive and stable through deep convolution stacks;
- **gamma**: :math:`w + \gamma w^+` in place of :math:`w`, favouring positive evidence;
- **flat** (first layer): relevance spread evenly over each output's receptive field;
- **Z-box** (first layer): the input's bounds :math:`l \le x \le h` in the rule, so the map
  stays a function of the pixels.

Two composites of them are registered: ``lrp``, zennit's ``EpsilonPlusFlat`` (flat first, z+ at
the convolutions, epsilon at the classifier; Kohlbrenner et al., 2020), and ``lrp-gamma``,
``EpsilonGammaBox`` (Z-box first with each image's own minimum and maximum as bounds, gamma 0.25,
epsilon at the classifier). The target's relevance starts as its logit.

The rules are exact only on a *canonical* network (Motzkus et al., 2022), so two canonizers
change the model while the map is made and are undone after: every BatchNorm is merged into the
convolution before it (zennit's ``SequentialMergeBatchNorm``: timm registers each ``bn`` right
after its ``conv``), and the residual sum of timm's ``BasicBlock`` and ``Bottleneck`` becomes a
module whose rule splits relevance between the branch and the shortcut in proportion to what
each added. Without the second, the sum's gradient would hand each branch all of it, and
relevance would double at every block. Relevance is conserved up to what the biases absorb
(BatchNorm merged into a convolution gives it one): the input's relevance sums to the logit
minus the biases' share.

Maps are computed in fp32 whatever the precision plan: a rule's denominator in bf16 loses the
small contributions the map is made of.
"""

from __future__ import annotations

import types
from typing import Any, ClassVar

import torch
from timm.models.resnet import BasicBlock, Bottleneck, ResNet
from torch import nn
from zennit.attribution import Gradient
from zennit.canonizers import AttributeCanonizer, Canonizer, SequentialMergeBatchNorm
from zennit.composites import EpsilonGammaBox, EpsilonPlusFlat
from zennit.core import Composite
from zennit.layer import Sum

from octlens.errors import OctlensError
from octlens.explain.base import Explainer, predicted_unless_given, target_scores
from octlens.models import is_vit
from octlens.runtime import PrecisionPlan


class LRP(Explainer):
    """LRP with zennit's ``EpsilonPlusFlat`` composite on a canonized timm ResNet (the module
    docstring gives the rules)."""

    title: ClassVar[str] = "LRP"

    @classmethod
    def supports(cls, model: nn.Module) -> bool:
        return isinstance(model, ResNet)

    def __init__(self, model: nn.Module, precision: str | PrecisionPlan = "auto") -> None:
        if not self.supports(model):
            raise OctlensError(
                f"{self.title} is built for timm ResNets (resnet18, resnet50, ...), whose "
                f"residual sums it canonizes; {type(model).__name__} is not one"
                + ("; for a ViT use legrad, rollout or reciprocam" if is_vit(model) else "")
            )
        super().__init__(model, precision)

    def composite(self, images: torch.Tensor) -> Composite:
        return EpsilonPlusFlat(canonizers=resnet_canonizers())

    def _explain(
        self, images: torch.Tensor, targets: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return lrp_relevance(self.model, images, targets, self.composite(images.float()))


class LRPGamma(LRP):
    """LRP with zennit's ``EpsilonGammaBox``: Z-box at the first convolution, bounded by each
    image's own minimum and maximum, gamma 0.25 at the others, epsilon at the classifier."""

    title: ClassVar[str] = "LRP (gamma)"

    def composite(self, images: torch.Tensor) -> Composite:
        low, high = image_bounds(images)
        return EpsilonGammaBox(low=low, high=high, canonizers=resnet_canonizers())


def image_bounds(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each image's own minimum and maximum, broadcast to its shape: the Z-box rule's bounds
    (the pixels of a normalized scan have no fixed range)."""
    low = images.amin(dim=(1, 2, 3), keepdim=True).expand_as(images)
    high = images.amax(dim=(1, 2, 3), keepdim=True).expand_as(images)
    return low, high


def lrp_relevance(
    model: nn.Module, images: torch.Tensor, targets: torch.Tensor | None, composite: Composite
) -> tuple[torch.Tensor, torch.Tensor]:
    """Relevance maps (B, H, W), summed over input channels, of each image's target class (the
    predicted one unless given), its logit the relevance it starts with; in fp32."""
    images = images.float().detach()
    chosen: list[torch.Tensor] = []

    def start(output: torch.Tensor) -> torch.Tensor:
        """The target logit as the output's relevance, zero elsewhere."""
        chosen.append(predicted_unless_given(output, targets))
        relevance = torch.zeros_like(output)
        return relevance.scatter_(1, chosen[0][:, None], target_scores(output, chosen[0])[:, None])

    with (
        torch.autocast(images.device.type, enabled=False),
        Gradient(model, composite) as attributor,
    ):
        _, relevance = attributor(images.requires_grad_(), start)
    return relevance.sum(dim=1).detach(), chosen[0]


def resnet_canonizers() -> list[Canonizer]:
    """What makes a timm ResNet canonical for LRP: BatchNorm merged, residual sums as modules,
    activations out of place (a hook cannot follow a tensor changed in place)."""
    return [SequentialMergeBatchNorm(), _ResidualSum(), _OutOfPlace()]


class _ResidualSum(AttributeCanonizer):
    """timm's residual blocks with their ``x += shortcut`` done by a :class:`zennit.layer.Sum`
    module, whose rule splits relevance by each branch's contribution."""

    def __init__(self) -> None:
        super().__init__(self._attributes)

    @staticmethod
    def _attributes(name: str, module: nn.Module) -> dict[str, object] | None:
        if isinstance(module, BasicBlock):
            return {"forward": types.MethodType(_basic_forward, module), "canonizer_sum": Sum()}
        if isinstance(module, Bottleneck):
            forward = types.MethodType(_bottleneck_forward, module)
            return {"forward": forward, "canonizer_sum": Sum()}
        return None

    def copy(self) -> _ResidualSum:
        return _ResidualSum()


class _OutOfPlace(Canonizer):
    """Activations set to work out of place while the map is made, then back to in place."""

    def __init__(self) -> None:
        self.module: Any = None  # an activation module with an ``inplace`` flag

    def apply(self, root_module: nn.Module) -> list[Canonizer]:
        instances: list[Canonizer] = []
        for module in root_module.modules():
            if getattr(module, "inplace", None) is True:
                instance = _OutOfPlace()
                instance.register(module)
                instances.append(instance)
        return instances

    def register(self, module: Any) -> None:
        self.module = module
        module.inplace = False

    def remove(self) -> None:
        if self.module is not None:
            self.module.inplace = True


def _shortcut_sum(block: Any, x: torch.Tensor, shortcut: torch.Tensor) -> torch.Tensor:
    """The end every timm residual block shares, with the sum as a module."""
    if block.se is not None:
        x = block.se(x)
    if block.drop_path is not None:
        x = block.drop_path(x)
    if block.downsample is not None:
        shortcut = block.downsample(shortcut)
    return block.canonizer_sum(torch.stack([x, shortcut], dim=-1))


def _basic_forward(self: Any, x: torch.Tensor) -> torch.Tensor:
    """timm's ``BasicBlock.forward``, the residual sum done by ``canonizer_sum``."""
    out = self.aa(self.act1(self.drop_block(self.bn1(self.conv1(x)))))
    out = self.bn2(self.conv2(out))
    return self.act2(_shortcut_sum(self, out, x))


def _bottleneck_forward(self: Any, x: torch.Tensor) -> torch.Tensor:
    """timm's ``Bottleneck.forward``, the residual sum done by ``canonizer_sum``."""
    out = self.act1(self.bn1(self.conv1(x)))
    out = self.aa(self.act2(self.drop_block(self.bn2(self.conv2(out)))))
    out = self.bn3(self.conv3(out))
    return self.act3(_shortcut_sum(self, out, x))
