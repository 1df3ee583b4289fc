"""Explainers against independent references: pytorch-grad-cam, captum, and hand computation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from helpers import TINY_VIT as SHARED_TINY_VIT
from octlens.errors import OctlensError
from octlens.explain import (
    AttentionRollout,
    GradCAM,
    GradCAMPlusPlus,
    HiResCAM,
    LayerCAM,
    LayerCAMFused,
    LeGrad,
    Occlusion,
    ViTReciproCAM,
    build_explainer,
)
from octlens.models import create_model, is_vit

#: the shared tiny ViT with a narrower MLP: faster for the many explainer oracles
TINY_VIT = {**SHARED_TINY_VIT, "mlp_ratio": 2.0}
OURS_TO_ORACLE = {
    GradCAM: "GradCAM",
    HiResCAM: "HiResCAM",
    GradCAMPlusPlus: "GradCAMPlusPlus",
    LayerCAM: "LayerCAM",
}


def _resnet() -> nn.Module:
    torch.manual_seed(0)
    return create_model("resnet18", 4).eval()


def _vit(img_size: int = 32, patch_size: int = 8) -> nn.Module:
    torch.manual_seed(0)
    return create_model("vit_tiny", 4, img_size=img_size, patch_size=patch_size, **TINY_VIT).eval()


def _vit_reshape(tokens: torch.Tensor, grid: int = 4) -> torch.Tensor:
    """pytorch-grad-cam's documented ViT reshape transform, written for the oracle."""
    patches = tokens[:, 1:, :].reshape(tokens.size(0), grid, grid, tokens.size(2))
    return patches.permute(0, 3, 1, 2)


def _oracle_cam(name, model, layer, images, targets, reshape=None) -> np.ndarray:
    """pytorch-grad-cam's map before its per-image min-max scaling and resizing."""
    import pytorch_grad_cam
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    cam = getattr(pytorch_grad_cam, name)(
        model=model, target_layers=[layer], reshape_transform=reshape
    )
    oracle_targets = [ClassifierOutputTarget(int(t)) for t in targets]
    outputs = cam.activations_and_grads(images)
    model.zero_grad()
    loss = sum(t(o) for t, o in zip(oracle_targets, outputs, strict=True))
    loss.backward()
    activations = cam.activations_and_grads.activations[0].cpu().numpy()
    gradients = cam.activations_and_grads.gradients[0].cpu().numpy()
    raw = cam.get_cam_image(images, layer, oracle_targets, activations, gradients, False)
    cam.activations_and_grads.release()
    return np.maximum(raw, 0)


@pytest.mark.parametrize("explainer", list(OURS_TO_ORACLE))
def test_cams_equal_pytorch_grad_cam_on_a_resnet(explainer):
    model = _resnet()
    images = torch.randn(3, 1, 64, 64)
    targets = torch.tensor([0, 3, 1])
    ours = explainer(model, precision="fp32")
    activations, gradients, _ = ours.activations_and_gradients(images, targets)
    mine = torch.relu(ours.combine(activations, gradients)).numpy()
    theirs = _oracle_cam(OURS_TO_ORACLE[explainer], model, model.layer4, images, targets)
    np.testing.assert_allclose(mine, theirs, rtol=1e-4, atol=1e-6 * np.abs(theirs).max())
    assert np.abs(theirs).max() > 0


def test_cams_at_a_named_layer_equal_pytorch_grad_cam_there():
    """``layer3`` by name (the CLI's ``--layer``): an 8 x 8 grid at 128 px, not layer4's 4 x 4."""
    model = _resnet()
    images = torch.randn(2, 1, 128, 128)
    targets = torch.tensor([2, 1])
    for explainer in OURS_TO_ORACLE:
        ours = build_explainer(
            explainer.__name__.lower().replace("plusplus", "++"), model, "fp32", "layer3"
        )
        activations, gradients, _ = ours.activations_and_gradients(images, targets)
        mine = torch.relu(ours.combine(activations, gradients)).numpy()
        assert mine.shape == (2, 8, 8)
        theirs = _oracle_cam(OURS_TO_ORACLE[explainer], model, model.layer3, images, targets)
        np.testing.assert_allclose(mine, theirs, rtol=1e-4, atol=1e-6 * np.abs(theirs).max())
    with pytest.raises(OctlensError, match="layer layer3: occlusion does not explain one layer"):
        build_explainer("occlusion", model, "fp32", "layer3")
    with pytest.raises(OctlensError, match="no layer named 'layer9'"):
        build_explainer("gradcam", model, "fp32", "layer9")
    with pytest.raises(OctlensError, match="the layer name is empty"):
        build_explainer("gradcam", model, "fp32", " ")
    for head in ("fc", "global_pool"):  # a layer without a spatial map: one line, not IndexError
        with pytest.raises(OctlensError, match=f"layer '{head}' .* not a feature map"):
            build_explainer("gradcam", model, "fp32", head)(images)
    vit = _vit()  # fused attention never calls attn_drop: the layer does not run at all
    skipped = build_explainer("gradcam", vit, "fp32", "blocks.0.attn.attn_drop")
    with pytest.raises(OctlensError, match=r"'blocks.0.attn.attn_drop' ran 0 time\(s\)"):
        skipped(torch.randn(1, 1, 32, 32))


def test_fused_layercam_is_each_stage_scaled_and_maxed_by_hand():
    """One forward and backward pass for three stages gives each stage's LayerCAM as three
    single-stage passes do; fused: tanh(2 L / max L) at input size, element-wise maximum."""
    model = _resnet()
    images = torch.randn(2, 1, 64, 64)
    fused = LayerCAMFused(model, precision="fp32")(images, [1, 2]).raw
    expected = torch.zeros(2, 64, 64)
    for name in ("layer2", "layer3", "layer4"):
        stage = LayerCAM(model, target_layer=name, precision="fp32")(images, [1, 2]).raw
        peak = stage.flatten(1).amax(dim=1)[:, None, None]
        expected = torch.maximum(expected, torch.tanh(2 * stage / peak))
    torch.testing.assert_close(fused, expected, rtol=1e-4, atol=1e-5)
    assert [type(m).__name__ for m in LayerCAMFused(model).target_layers] == ["Sequential"] * 3


@pytest.mark.parametrize("explainer", list(OURS_TO_ORACLE))
def test_cams_equal_pytorch_grad_cam_on_a_vit(explainer):
    model = _vit()
    images = torch.randn(2, 1, 32, 32)
    targets = torch.tensor([2, 1])
    ours = explainer(model, precision="fp32")  # default layer: the last block's norm1
    assert ours.target_layer is model.blocks[-1].norm1
    activations, gradients, _ = ours.activations_and_gradients(images, targets)
    mine = torch.relu(ours.combine(activations, gradients)).numpy()
    theirs = _oracle_cam(
        OURS_TO_ORACLE[explainer],
        model,
        model.blocks[-1].norm1,
        images,
        targets,
        reshape=_vit_reshape,
    )
    np.testing.assert_allclose(mine, theirs, rtol=1e-4, atol=1e-6 * np.abs(theirs).max())


def test_occlusion_equals_captum():
    from captum.attr import Occlusion as CaptumOcclusion

    model = _resnet()
    images = torch.randn(2, 1, 32, 32)
    targets = torch.tensor([1, 2])
    ours = Occlusion(model, window=8, stride=4, fill=0.0, batch_size=16, precision="fp32")(
        images, targets
    ).raw

    def probability(x):
        return torch.softmax(model(x), dim=1)

    theirs = CaptumOcclusion(probability).attribute(
        images, sliding_window_shapes=(1, 8, 8), strides=(1, 4, 4), baselines=0.0, target=targets
    )[:, 0]
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-6)


def _hand_attention(model: nn.Module, images: torch.Tensor) -> list[np.ndarray]:
    """Each block's attention probabilities computed from its weights, with no hooks."""
    x = model.norm_pre(model.patch_drop(model._pos_embed(model.patch_embed(images))))
    attentions = []
    for block in model.blocks:
        attn = block.attn
        normed = block.norm1(x)
        b, n, c = normed.shape
        qkv = attn.qkv(normed).reshape(b, n, 3, attn.num_heads, c // attn.num_heads)
        q, k = qkv[:, :, 0].transpose(1, 2), qkv[:, :, 1].transpose(1, 2)
        weights = torch.softmax(q @ k.transpose(-2, -1) * attn.scale, dim=-1)
        attentions.append(weights.detach().numpy())
        x = block(x)
    return attentions


def test_rollout_matches_hand_computation_on_a_two_block_vit():
    model = _vit()
    images = torch.randn(2, 1, 32, 32)
    expected = []
    attentions = _hand_attention(model, images)
    for i in range(len(images)):
        rollout = np.eye(17)
        for attention in attentions:
            step = attention[i].mean(axis=0) + np.eye(17)
            step /= step.sum(axis=1, keepdims=True)
            rollout = step @ rollout
        expected.append(rollout[0, 1:].reshape(4, 4))
    explainer = AttentionRollout(model, precision="fp32")
    low_res, _ = explainer._explain(images, torch.zeros(2, dtype=torch.long))
    np.testing.assert_allclose(low_res.numpy(), np.stack(expected), rtol=1e-5, atol=1e-7)
    assert explainer(images).raw.shape == (2, 32, 32)


def test_rollout_fusion_and_discard_by_hand():
    explainer = AttentionRollout(_vit(), head_fusion="max", discard_ratio=0.5, precision="fp32")
    row = torch.tensor([[[0.1, 0.4, 0.2, 0.3]]])
    # The two lowest entries are dropped, but the CLS column (0.1) is always kept.
    torch.testing.assert_close(explainer._discard(row), torch.tensor([[[0.1, 0.4, 0.0, 0.3]]]))


def test_every_method_gives_input_sized_maps_and_leaves_the_model_as_it_was():
    cnn, vit = _resnet(), _vit()
    vit.train()
    fused_before = [block.attn.fused_attn for block in vit.blocks]
    for block in vit.blocks[:1]:
        block.attn.qkv.weight.requires_grad_(False)
    grad_flags = [p.requires_grad for p in vit.parameters()]
    runs = [(cls(cnn), cnn, 64) for cls in OURS_TO_ORACLE] + [(Occlusion(cnn, 16, 16), cnn, 64)]
    runs += [(cls(vit), vit, 32) for cls in OURS_TO_ORACLE] + [(AttentionRollout(vit), vit, 32)]
    runs += [(LeGrad(vit), vit, 32), (ViTReciproCAM(vit), vit, 32)]
    runs += [(LayerCAMFused(cnn), cnn, 64), (LayerCAMFused(vit), vit, 32)]
    for explainer, model, size in runs:
        images = torch.randn(2, 1, size, size)
        explanation = explainer(images)
        assert explanation.raw.shape == (2, size, size)
        with torch.no_grad():  # default targets: the predicted class (where not a near-tie)
            top2 = model.eval()(images).topk(2, dim=1)
            model.train(model is vit)
        clear = (top2.values[:, 0] - top2.values[:, 1]) > 1e-3
        assert (explanation.targets == top2.indices[:, 0])[clear].all()
        assert explanation.raw.dtype == torch.float32
        normalized = explanation.normalized
        assert normalized.min() >= 0 and normalized.max() <= 1
        for module in model.modules():
            assert not module._forward_hooks and not module._backward_hooks
    assert vit.training and all(m.training for m in vit.modules())
    assert [block.attn.fused_attn for block in vit.blocks] == fused_before
    assert [p.requires_grad for p in vit.parameters()] == grad_flags


def test_two_explainers_on_one_model_agree_with_a_fresh_one():
    model = _vit()
    images = torch.randn(2, 1, 32, 32)
    first = GradCAM(model)(images).raw
    AttentionRollout(model)(images)
    LayerCAM(model)(images)
    torch.testing.assert_close(GradCAM(model)(images).raw, first)


def test_inplace_activations_do_not_break_cams():
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(4, 4, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 3),
    ).eval()
    maps = GradCAM(model, target_layer=model[2])(torch.randn(2, 1, 8, 8), [0, 2]).raw
    assert maps.shape == (2, 8, 8) and torch.isfinite(maps).all()


def test_user_errors():
    import timm

    swin = timm.create_model(
        "swin_tiny_patch4_window7_224",
        num_classes=3,
        in_chans=1,
        img_size=32,
        window_size=4,
        embed_dim=24,
        depths=(1, 1),
        num_heads=(1, 1),
    )
    assert hasattr(swin, "patch_embed")  # what the old check looked for
    for vit_only in (AttentionRollout, LeGrad, ViTReciproCAM):
        with pytest.raises(OctlensError, match="needs a Vision Transformer in timm's ViT layout"):
            vit_only(_resnet())
        with pytest.raises(OctlensError, match=r"SwinTransformer has no num_prefix_tokens, blocks"):
            vit_only(swin)
    assert is_vit(_vit()) and not is_vit(swin) and not is_vit(_resnet())
    with pytest.raises(OctlensError, match="3 targets for 2 images"):
        GradCAM(_resnet())(torch.randn(2, 1, 32, 32), [0, 1, 2])
    with pytest.raises(OctlensError, match="no layer named 'layer9'"):
        GradCAM(_resnet(), target_layer="layer9")


def test_the_vit_oracle_comparison_tells_the_four_cams_apart():
    """On a ResNet's pooled linear head Grad-CAM and HiResCAM coincide; on a ViT they must not."""
    model = _vit()
    images, targets = torch.randn(2, 1, 32, 32), torch.tensor([2, 1])
    activations, gradients, _ = GradCAM(model).activations_and_gradients(images, targets)
    maps = [torch.relu(cls.combine(activations, gradients)) for cls in OURS_TO_ORACLE]
    for i in range(len(maps)):
        for j in range(i + 1, len(maps)):
            assert not torch.allclose(maps[i], maps[j], rtol=1e-3, atol=1e-7), (i, j)


def _manual_vit_forward(model: nn.Module, images: torch.Tensor):
    """A timm ViT forward written out by hand, keeping each block's attention and output."""
    x = model.norm_pre(model.patch_drop(model._pos_embed(model.patch_embed(images))))
    attentions, outputs = [], []
    for block in model.blocks:
        attn = block.attn
        normed = block.norm1(x)
        b, n, c = normed.shape
        qkv = attn.qkv(normed).reshape(b, n, 3, attn.num_heads, c // attn.num_heads)
        q, k, v = (qkv[:, :, i].transpose(1, 2) for i in range(3))
        weights = torch.softmax(q @ k.transpose(-2, -1) * attn.scale, dim=-1)
        mixed = (weights @ v).transpose(1, 2).reshape(b, n, c)
        x = x + block.ls1(attn.proj(mixed))
        x = x + block.ls2(block.mlp(block.norm2(x)))
        attentions.append(weights)
        outputs.append(x)
    return attentions, outputs, model.forward_head(model.norm(x))


def test_legrad_matches_hand_computation_on_a_two_block_vit():
    model = _vit()
    images, targets = torch.randn(2, 1, 32, 32), torch.tensor([3, 0])
    attentions, outputs, logits = _manual_vit_forward(model, images)
    torch.testing.assert_close(logits, model(images), rtol=1e-5, atol=1e-5)
    expected = 0
    for attention, tokens in zip(attentions, outputs, strict=True):
        score = model.head(model.norm(tokens.mean(dim=1))).gather(1, targets[:, None]).sum()
        (gradient,) = torch.autograd.grad(score, attention, retain_graph=True)
        expected = expected + torch.relu(gradient).mean(dim=(1, 2))[:, 1:]
    expected = (expected / 2).reshape(2, 4, 4)
    mine, _ = LeGrad(model)._explain(images, targets)
    torch.testing.assert_close(mine, expected.detach(), rtol=1e-5, atol=1e-8)
    assert expected.abs().max() > 0
    last_only, _ = LeGrad(model, num_blocks=1)._explain(images, targets)
    assert not torch.allclose(last_only, mine)


def test_reciprocam_batched_equals_one_image_at_a_time_and_a_hooked_forward():
    from octlens.explain.reciprocam import neighbourhood_weights

    model = _vit()
    images, targets = torch.randn(3, 1, 32, 32), torch.tensor([0, 1, 3])
    batched, _ = ViTReciproCAM(model, batch_size=7)._explain(images, targets)
    for i in range(3):
        single, _ = ViTReciproCAM(model, batch_size=16)._explain(
            images[i : i + 1], targets[i : i + 1]
        )
        torch.testing.assert_close(batched[i : i + 1], single, rtol=1e-5, atol=1e-6)

    # Position 5 of image 1, through the model's own forward with norm1's output replaced.
    weights = neighbourhood_weights(4, 4)[5]
    assert weights.sum() == pytest.approx(1.0) and weights.max() == pytest.approx(0.25)

    def mask(module, inputs, output):
        masked = output.clone()
        masked[:, 1:] = weights[None, :, None] * output[:, 1:]
        return masked

    handle = model.blocks[-1].norm1.register_forward_hook(mask)
    try:
        with torch.no_grad():
            probability = torch.softmax(model(images[1:2]), dim=1)[0, 1]
    finally:
        handle.remove()
    assert batched[1].flatten()[5].item() == pytest.approx(probability.item(), rel=1e-5)


def test_bf16_autocast_gives_fp32_maps_close_to_fp32():
    model = _vit()
    images = torch.randn(2, 1, 32, 32)
    exact = GradCAM(model, precision="fp32")(images, [0, 1]).raw
    fast = GradCAM(model, precision="bf16")(images, [0, 1]).raw
    assert fast.dtype == torch.float32
    assert (fast - exact).abs().max() <= 0.05 * exact.abs().max()


def test_methods_are_found_by_the_papers_names_too():
    from octlens.explain import check_methods

    assert check_methods(["vit-reciprocam", "grad-cam", "legrad"]) == [
        "reciprocam",
        "gradcam",
        "legrad",
    ]
    with pytest.raises(OctlensError, match=r"unknown method\(s\) \['vit-magic'\]"):
        check_methods(["vit-magic"])


def test_vit_methods_read_a_conv_stem_vit_as_any_vit():
    torch.manual_seed(0)
    model = create_model("vit_tiny", 4, img_size=32, patch_size=8, stem="conv", **TINY_VIT).eval()
    images = torch.randn(2, 1, 32, 32)
    for explainer in [GradCAM(model), AttentionRollout(model), LeGrad(model), ViTReciproCAM(model)]:
        explanation = explainer(images)
        assert explanation.raw.shape == (2, 32, 32) and torch.isfinite(explanation.raw).all()
        assert explanation.raw.flatten(1).std(dim=1).min() > 0  # not a constant map
