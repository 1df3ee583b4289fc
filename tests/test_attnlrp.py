"""AttnLRP and CP-LRP on timm ViTs: held to lxt (the AttnLRP authors' library) on a torchvision
ViT given the same weights, conservation where no bias absorbs relevance, and the model left
as it was."""

from __future__ import annotations

import functools
from collections.abc import Iterator

import lxt.efficient.patches as lxt_patches
import pytest
import torch
from lxt.efficient import monkey_patch, monkey_patch_zennit
from lxt.efficient.models.vit_torch import cp_LRP
from lxt.efficient.rules import divide_gradient
from timm.layers import SwiGLU
from torch import nn
from torchvision.models import vision_transformer as torchvision_vit
from zennit.composites import LayerMapComposite
from zennit.core import BasicHook
from zennit.rules import ZBox

from helpers import TINY_VIT, explain_batched_and_single
from octlens.errors import OctlensError
from octlens.explain import CPLRP, EXPLAINERS, AttnLRP
from octlens.models import create_model

WIDTH = 32


def _timm_vit(seed: int = 0) -> nn.Module:
    """A depth-2 timm ViT with every parameter away from its init (LayerNorm weights and biases,
    class token and positions included), so each rule has something to change."""
    torch.manual_seed(seed)
    vit = create_model("vit_tiny", 3, img_size=32, patch_size=8, **TINY_VIT).eval()
    with torch.no_grad():
        for name, parameter in vit.named_parameters():
            if "norm" in name and name.endswith("weight"):
                parameter.uniform_(0.5, 1.5)
            elif "norm" in name:
                parameter.uniform_(-0.3, 0.3)
            else:
                parameter.normal_(0, 0.3 if parameter.dim() > 1 else 0.1)
    return vit


def _torchvision_twin(vit: nn.Module) -> nn.Module:
    """torchvision's ViT (another implementation of the same network) with ``vit``'s weights:
    its attention is ``nn.MultiheadAttention``, whose packed input projection is timm's qkv."""
    twin = torchvision_vit.VisionTransformer(
        image_size=32,
        patch_size=8,
        num_layers=2,
        num_heads=2,
        hidden_dim=WIDTH,
        mlp_dim=4 * WIDTH,
        num_classes=3,
    )
    twin.conv_proj = nn.Conv2d(1, WIDTH, 8, 8)
    copies = [
        (twin.conv_proj, vit.patch_embed.proj),
        (twin.encoder.ln, vit.norm),
        (twin.heads.head, vit.head),
    ]
    for layer, block in zip(twin.encoder.layers, vit.blocks, strict=True):
        copies += [
            (layer.ln_1, block.norm1),
            (layer.ln_2, block.norm2),
            (layer.mlp[0], block.mlp.fc1),
            (layer.mlp[3], block.mlp.fc2),
            (layer.self_attention.out_proj, block.attn.proj),
        ]
        layer.self_attention.in_proj_weight.data.copy_(block.attn.qkv.weight)
        layer.self_attention.in_proj_bias.data.copy_(block.attn.qkv.bias)
    for mine, theirs in copies:
        mine.weight.data.copy_(theirs.weight)
        mine.bias.data.copy_(theirs.bias)
    twin.class_token.data.copy_(vit.cls_token)
    twin.encoder.pos_embedding.data.copy_(vit.pos_embed)
    return twin.eval()


def _attnlrp_attention(self, query, key, value, *args, **kwargs):
    """lxt's AttnLRP attention wrapper (``wrap_attention_forward``: query and key 1/4, value
    1/2) for ``nn.MultiheadAttention``, whose in-projection is linear so the shares carry."""
    return self.original_forward(
        divide_gradient(query, 4),
        divide_gradient(key, 4),
        divide_gradient(value, 2),
        *args,
        **kwargs,
    )


LXT_MAPS = {
    "attnlrp": {
        nn.GELU: functools.partial(
            lxt_patches.patch_method, lxt_patches.non_linear_forward, keep_original=True
        ),
        nn.LayerNorm: functools.partial(lxt_patches.patch_method, lxt_patches.layer_norm_forward),
        nn.MultiheadAttention: functools.partial(
            lxt_patches.patch_method, _attnlrp_attention, keep_original=True
        ),
    },
    "cp-lrp": cp_LRP,  # lxt's own map for torchvision's ViT
}


@pytest.fixture
def lxt_patched() -> Iterator[None]:
    """lxt patches torch's classes and zennit's hooks in place; put them back after the test."""
    classes = (nn.GELU, nn.LayerNorm, nn.MultiheadAttention)
    saved = {cls: cls.forward for cls in classes}
    hook_methods = {name: getattr(BasicHook, name) for name in ("forward", "backward")}
    yield
    for cls, forward in saved.items():
        cls.forward = forward  # type: ignore[method-assign]
        if "original_forward" in vars(cls):
            delattr(cls, "original_forward")
    for name, method in hook_methods.items():
        setattr(BasicHook, name, method)


def _gradient_times_input(model: nn.Module, images: torch.Tensor, targets: list[int]):
    images = images.clone().requires_grad_()
    logits = model(images)
    logits[torch.arange(len(targets)), torch.tensor(targets)].sum().backward()
    return (images * images.grad).sum(dim=1).detach()


@pytest.mark.parametrize("first_layer", ["zbox", "epsilon"])
@pytest.mark.parametrize("method", ["attnlrp", "cp-lrp"])
def test_maps_match_lxt_on_torchvision_vit_with_the_same_weights(method, first_layer, lxt_patched):
    """lxt's rules on torchvision's modules; at the first layer zennit's Z-box through lxt's
    zennit bridge (which turns zennit's relevance into its gradient x input form), or lxt's
    plain gradient x input."""
    vit = _timm_vit()
    twin = _torchvision_twin(vit)
    images = torch.randn(3, 1, 32, 32)
    torch.testing.assert_close(twin(images), vit(images), rtol=1e-5, atol=1e-5)
    targets = [0, 1, 2]
    explainer = EXPLAINERS[method](vit, first_layer=first_layer, precision="fp32")
    ours = explainer(images, targets).raw
    plain = _gradient_times_input(twin, images, targets)

    monkey_patch(torchvision_vit, LXT_MAPS[method])
    if first_layer == "zbox":
        monkey_patch_zennit()
        low = images.amin(dim=(1, 2, 3), keepdim=True).expand_as(images)
        high = images.amax(dim=(1, 2, 3), keepdim=True).expand_as(images)
        composite = LayerMapComposite([(nn.Conv2d, ZBox(low=low, high=high))])
        with composite.context(twin):
            reference = _gradient_times_input(twin, images, targets)
    else:
        reference = _gradient_times_input(twin, images, targets)
    scale = reference.abs().amax()
    torch.testing.assert_close(ours / scale, reference / scale, rtol=0, atol=1e-5)
    # the rules matter here: plain gradient x input is far from the reference
    assert (plain - reference).abs().amax() > 0.05 * scale


def test_cp_lrp_conserves_the_logit_when_no_bias_absorbs_any():
    """With every bias, the class token and the positions at zero, the network under CP-LRP's
    rules is linear in its input, so the pixels' relevance sums to the target logit."""
    vit = _timm_vit()
    with torch.no_grad():
        for name, parameter in vit.named_parameters():
            if name.endswith("bias") or name in ("cls_token", "pos_embed"):
                parameter.zero_()
    images = torch.randn(4, 1, 32, 32)
    logits = vit(images).detach()
    explanation = CPLRP(vit, precision="fp32")(images)
    chosen = logits.gather(1, explanation.targets[:, None])[:, 0]
    torch.testing.assert_close(explanation.raw.flatten(1).sum(1), chosen, rtol=1e-4, atol=1e-6)
    # AttnLRP's softmax rule is a first-order Taylor term: it does not conserve
    attn = AttnLRP(vit, precision="fp32")(images, explanation.targets).raw.flatten(1).sum(1)
    assert not torch.allclose(attn, chosen, rtol=1e-2)


@pytest.mark.parametrize("stem", ["patch", "conv"])
def test_attnlrp_leaves_the_model_as_it_was_and_batches_like_single_images(stem):
    torch.manual_seed(0)
    vit = create_model("vit_tiny", 4, img_size=32, patch_size=8, stem=stem, **TINY_VIT).eval()
    state = {key: value.clone() for key, value in vit.state_dict().items()}
    fused = [block.attn.fused_attn for block in vit.blocks]
    images = torch.randn(3, 1, 32, 32)
    before = vit(images).detach()
    explain_batched_and_single(vit, ("attnlrp", "cp-lrp"), images, atol=1e-6)
    assert AttnLRP(vit)(images).targets.tolist() == before.argmax(1).tolist()
    after = vit.state_dict()
    assert set(after) == set(state) and all(torch.equal(after[k], state[k]) for k in state)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in vit.modules())
    assert [block.attn.fused_attn for block in vit.blocks] == fused
    torch.testing.assert_close(vit(images), before)


def test_models_without_rules_are_refused_in_one_line():
    resnet = create_model("resnet18", 4)
    assert not AttnLRP.supports(resnet)
    with pytest.raises(OctlensError, match="needs a Vision Transformer"):
        AttnLRP(resnet)
    pooled = create_model("vit_tiny", 4, img_size=32, patch_size=8, global_pool="map", **TINY_VIT)
    assert not CPLRP.supports(pooled)
    with pytest.raises(OctlensError, match=r"no rule for .*attention-pooling head"):
        CPLRP(pooled)
    gated = create_model("vit_tiny", 4, img_size=32, patch_size=8, mlp_layer=SwiGLU, **TINY_VIT)
    with pytest.raises(OctlensError, match=r"no rule for SwiGLU"):
        AttnLRP(gated)
    plain = create_model("vit_tiny", 4, img_size=32, patch_size=8, **TINY_VIT)
    assert AttnLRP.supports(plain)
    with pytest.raises(OctlensError, match="first_layer=flat: choose zbox or epsilon"):
        AttnLRP(plain, first_layer="flat")
    plain.patch_embed.proj = nn.Identity()  # a patch embedding with no convolution
    with pytest.raises(OctlensError, match="patch embedding to be a convolution"):
        AttnLRP(plain)
