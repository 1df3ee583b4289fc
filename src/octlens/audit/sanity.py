"""Sanity check by cascading model-parameter randomization (Adebayo et al., NeurIPS 2018).

An explanation that does not change when the model's learned weights are destroyed explains the
image (edges, contrast), not the model. Starting from the head, each stage re-initializes one more
part of a copy of the model (head, then each block from the last to the first, then the stem) and
recomputes the maps for the same images and targets. Similarity to the trained model's maps is
measured per image by

- **Spearman rank correlation** of the two maps' pixels (average ranks for ties), and
- **SSIM** (Wang et al. 2004; 11 px Gaussian window, sigma 1.5) of the maps min-max scaled to
  [0, 1], averaged over the window positions that fit inside the map.

Verdict: a method **passes** when the median Spearman correlation has fallen below
:data:`PASS_BELOW` once the head and the last block are randomized. Methods that stay similar
there (attention rollout is a known case: it ignores the head entirely) are reported as failing.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from octlens.audit.localization import average_ranks
from octlens.explain.base import Explainer, scaled_to_unit

#: Median Spearman correlation, after the head and last block are randomized, to pass.
PASS_BELOW = 0.5


@dataclass
class SanityResult:
    """Similarity of each cascade stage's maps to the trained model's, (stages, images)."""

    stages: list[str]
    spearman: torch.Tensor
    ssim: torch.Tensor

    @property
    def passed(self) -> bool:
        """Whether similarity fell below :data:`PASS_BELOW` with the head and last block random."""
        return bool(self.spearman[min(1, len(self.stages) - 1)].median() < PASS_BELOW)


def randomization_stages(model: nn.Module) -> list[tuple[str, list[nn.Module]]]:
    """Stages from the output down: ``head`` (everything after the blocks), each block, ``stem``.

    Blocks are the items of the model's top-level ``Sequential``/``ModuleList`` children (timm's
    ResNet ``layer1..4``, ViT ``blocks``); other children with parameters before the blocks are
    the stem, after them the head.
    """
    head: list[nn.Module] = []
    blocks: list[tuple[str, list[nn.Module]]] = []
    stem: list[nn.Module] = []
    for name, child in reversed(list(model.named_children())):
        if not any(True for _ in child.parameters()):
            continue
        if isinstance(child, nn.Sequential | nn.ModuleList):
            blocks += [(f"{name}.{i}", [block]) for i, block in reversed(list(enumerate(child)))]
        elif blocks:
            stem.append(child)
        else:
            head.append(child)
    return [("head", head), *blocks, ("stem", stem)]


def cascading_randomization(
    model: nn.Module,
    make_explainer: Callable[[nn.Module], Explainer],
    images: torch.Tensor,
    targets: torch.Tensor | None = None,
    seed: int = 0,
) -> SanityResult:
    """Explain ``images`` with a copy of ``model`` randomized stage by stage, cumulatively.

    ``targets`` default to the trained model's predictions, and stay fixed through the cascade.
    """
    trained = make_explainer(model)(images, targets)
    targets = trained.targets
    randomized = copy.deepcopy(model)
    names, spearman, ssim = [], [], []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for name, modules in randomization_stages(randomized):
            for module in modules:
                _reinitialize(module)
            maps = make_explainer(randomized)(images, targets).raw
            names.append(name)
            spearman.append(spearman_correlation(trained.raw, maps))
            ssim.append(structural_similarity(trained.raw, maps))
    return SanityResult(names, torch.stack(spearman), torch.stack(ssim))


def spearman_correlation(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(B,) Spearman correlation of maps ``a`` and ``b`` (B, H, W); 0 where a map is constant."""
    ranks_a = average_ranks(a.flatten(1).double())
    ranks_b = average_ranks(b.flatten(1).double())
    ranks_a = ranks_a - ranks_a.mean(dim=1, keepdim=True)
    ranks_b = ranks_b - ranks_b.mean(dim=1, keepdim=True)
    norms = (ranks_a.square().sum(dim=1) * ranks_b.square().sum(dim=1)).sqrt()
    rho = (ranks_a * ranks_b).sum(dim=1) / norms
    return torch.nan_to_num(rho, nan=0.0).float().cpu()


def structural_similarity(
    a: torch.Tensor, b: torch.Tensor, window: int = 11, sigma: float = 1.5
) -> torch.Tensor:
    """(B,) mean SSIM of maps ``a`` and ``b`` (B, H, W), each min-max scaled to [0, 1]."""
    x = scaled_to_unit(a.double().cpu())[:, None]
    y = scaled_to_unit(b.double().cpu())[:, None]
    taps = torch.arange(window, dtype=torch.float64) - (window - 1) / 2
    gauss = torch.exp(-(taps**2) / (2 * sigma**2))
    kernel = (torch.outer(gauss, gauss) / gauss.sum() ** 2)[None, None]

    def blur(image: torch.Tensor) -> torch.Tensor:
        return F.conv2d(image, kernel)

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    c1, c2 = 0.01**2, 0.03**2
    ssim = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / (
        (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
    )
    return ssim.flatten(1).mean(dim=1).float()


def _reinitialize(module: nn.Module) -> None:
    """Fresh initial weights for every submodule that knows how to reset itself."""
    for submodule in module.modules():
        reset = getattr(submodule, "reset_parameters", None)
        if callable(reset):
            reset()
