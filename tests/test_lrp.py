"""LRP through zennit: the epsilon rule by hand, conservation, the canonizers against BatchNorm
folded by hand, and the model left as it was."""

from __future__ import annotations

import copy
import itertools

import numpy as np
import pytest
import torch
from torch import nn
from zennit.composites import LayerMapComposite
from zennit.rules import Epsilon

from helpers import TINY_VIT, explain_batched_and_single
from octlens.errors import OctlensError
from octlens.explain import LRP, LRPGamma
from octlens.explain.lrp import lrp_relevance
from octlens.models import create_model


def _resnet(name: str = "resnet18", seed: int = 0) -> nn.Module:
    """A timm ResNet with BatchNorm statistics and affine parameters away from their init, so
    merging them into the convolutions changes the weights."""
    torch.manual_seed(seed)
    model = create_model(name, 4)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.1, 0.1)
    return model.eval()


def test_epsilon_rule_by_hand_on_a_two_layer_network():
    """R_j = sum_k a_j w_jk / (z_k + eps sign z_k) R_k, layer by layer, from the target logit."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 5), nn.ReLU(), nn.Linear(5, 3)).double()
    images = torch.randn(2, 1, 4, 4, dtype=torch.double)
    epsilon = 0.1
    composite = LayerMapComposite([(nn.Linear, Epsilon(epsilon=epsilon))])
    maps, targets = lrp_relevance(model.float(), images.float(), torch.tensor([2, 0]), composite)

    first, second = model[1], model[3]
    for i in range(2):
        x = images[i].flatten().double().numpy()
        w1, b1 = first.weight.double().detach().numpy(), first.bias.double().detach().numpy()
        w2, b2 = second.weight.double().detach().numpy(), second.bias.double().detach().numpy()
        z1 = w1 @ x + b1
        a1 = np.maximum(z1, 0)
        z2 = w2 @ a1 + b2
        out = np.zeros(3)
        out[int(targets[i])] = z2[int(targets[i])]
        hidden = a1 * (w2.T @ (out / (z2 + epsilon * np.where(z2 >= 0, 1, -1))))
        relevance = x * (w1.T @ (hidden / (z1 + epsilon * np.where(z1 >= 0, 1, -1))))
        np.testing.assert_allclose(maps[i].flatten().numpy(), relevance, rtol=1e-4, atol=1e-6)
    assert targets.tolist() == [2, 0]


def test_relevance_is_conserved_when_no_bias_absorbs_any():
    """BatchNorm at its identity and no classifier bias: the input's relevance sums to the target
    logit (up to the rules' stabilizers), through every residual sum."""
    torch.manual_seed(0)
    model = create_model("resnet18", 4).eval()
    nn.init.zeros_(model.fc.bias)
    images = torch.randn(3, 1, 64, 64)
    logits = model(images).detach()
    explanation = LRP(model, precision="fp32")(images)
    chosen = logits.gather(1, explanation.targets[:, None])[:, 0]
    np.testing.assert_allclose(explanation.raw.flatten(1).sum(1), chosen, rtol=2e-3)


def test_canonizer_merges_batchnorm_as_folding_it_by_hand_does():
    model = _resnet()
    folded = copy.deepcopy(model)
    for parent in folded.modules():
        names = list(parent._modules)
        for conv_name, bn_name in itertools.pairwise(names):
            conv, bn = parent._modules[conv_name], parent._modules[bn_name]
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
                conv.weight.data = conv.weight.data * scale[:, None, None, None]
                conv.bias = nn.Parameter(bn.bias - bn.running_mean * scale)
                parent._modules[bn_name] = nn.Identity()
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    images = torch.randn(2, 1, 64, 64)
    torch.testing.assert_close(folded(images), model(images), rtol=1e-4, atol=1e-4)
    for method in (LRP, LRPGamma):
        merged = method(model, precision="fp32")(images, [1, 3]).raw
        by_hand = method(folded, precision="fp32")(images, [1, 3]).raw
        scale = merged.abs().amax()
        torch.testing.assert_close(merged / scale, by_hand / scale, rtol=0, atol=1e-4)


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_lrp_leaves_the_model_as_it_was_and_batches_like_single_images(name):
    model = _resnet(name)
    state = {key: value.clone() for key, value in model.state_dict().items()}
    images = torch.randn(3, 1, 48, 48)
    before = model(images).detach()
    explain_batched_and_single(model, ("lrp", "lrp-gamma"), images, atol=1e-5)
    after = model.state_dict()
    assert set(after) == set(state) and all(torch.equal(after[k], state[k]) for k in state)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    assert all(m.inplace for m in model.modules() if isinstance(m, nn.ReLU))
    assert all(m.bias is None for m in model.modules() if isinstance(m, nn.Conv2d))
    torch.testing.assert_close(model(images), before)


def test_lrp_refuses_a_vit_in_one_line():
    vit = create_model("vit_tiny", 4, img_size=32, patch_size=8, **TINY_VIT)
    assert not LRP.supports(vit) and LRP.supports(_resnet())
    with pytest.raises(OctlensError, match=r"built for timm ResNets.*for a ViT use legrad"):
        LRP(vit)
