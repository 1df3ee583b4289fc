from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
import torchvision
from safetensors.torch import save_file

from octlens.errors import OctlensError
from octlens.models import create_model, is_vit

TINY_VIT = {"embed_dim": 32, "depth": 2, "num_heads": 2, "mlp_ratio": 2.0}


@pytest.mark.parametrize(("img_size", "patch_size"), [(32, 8), (48, 16), (40, 4)])
def test_vit_from_scratch_any_image_and_patch_size(img_size, patch_size):
    model = create_model("vit_tiny", 4, img_size=img_size, patch_size=patch_size, **TINY_VIT)
    assert is_vit(model)
    assert model.patch_embed.proj.in_channels == 1
    assert model.patch_embed.grid_size == (img_size // patch_size,) * 2
    assert model(torch.randn(2, 1, img_size, img_size)).shape == (2, 4)


def test_the_seed_models_are_expressible(tmp_path):
    scratch = create_model("resnet50", 4)
    assert scratch.conv1.in_channels == 1 and scratch.fc.out_features == 4
    weights = tmp_path / "resnet50.safetensors"
    save_file(
        {k: v.contiguous() for k, v in torchvision.models.resnet50().state_dict().items()}, weights
    )
    tuned = create_model("resnet50", 4, pretrained=weights)
    assert tuned.fc.out_features == 4
    assert create_model("vit_small", 4, img_size=64, patch_size=16).num_prefix_tokens == 1


def test_timm_layout_weights_adapt_to_one_channel_and_a_new_head(tmp_path):
    source = create_model("resnet18", 1000, in_chans=3)
    path = tmp_path / "timm.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, path)
    model = create_model("resnet18", 4, pretrained=path)
    torch.testing.assert_close(model.conv1.weight, source.conv1.weight.sum(1, keepdim=True))
    torch.testing.assert_close(model.layer4[1].conv2.weight, source.layer4[1].conv2.weight)
    assert model.fc.weight.shape == (4, 512)


def test_torchvision_resnet_pth_loads_with_weights_only(tmp_path):
    source = torchvision.models.resnet18(num_classes=7)
    path = tmp_path / "tv.pth"
    torch.save(source.state_dict(), path)
    model = create_model("resnet18", 4, pretrained=path)
    torch.testing.assert_close(model.conv1.weight, source.conv1.weight.sum(1, keepdim=True))
    torch.testing.assert_close(
        model.layer2[0].downsample[0].weight, source.layer2[0].downsample[0].weight
    )


def test_torchvision_vit_layout_gives_the_same_outputs(tmp_path):
    source = torchvision.models.VisionTransformer(
        image_size=32,
        patch_size=8,
        num_layers=2,
        num_heads=2,
        hidden_dim=32,
        mlp_dim=64,
        num_classes=10,
    ).eval()
    path = tmp_path / "tv_vit.safetensors"
    save_file(source.state_dict(), path)
    model = create_model(
        "vit_tiny", 10, in_chans=3, img_size=32, patch_size=8, pretrained=path, **TINY_VIT
    ).eval()
    images = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(model(images), source(images), atol=1e-5, rtol=1e-5)
    # The same weights fine-tuned: 1 channel, larger images (position embedding resampled).
    tuned = create_model("vit_tiny", 4, img_size=64, patch_size=8, pretrained=path, **TINY_VIT)
    assert tuned(torch.randn(1, 1, 64, 64)).shape == (1, 4)


def test_weights_of_another_model_are_a_clear_error(tmp_path):
    path = tmp_path / "vit.safetensors"
    save_file(create_model("vit_tiny", 4, img_size=32, patch_size=8, **TINY_VIT).state_dict(), path)
    with pytest.raises(OctlensError, match=r"vit.safetensors: .*another architecture"):
        create_model("resnet18", 4, pretrained=path)
    bad = tmp_path / "junk.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(OctlensError, match=r"junk.pth: not a readable weights file"):
        create_model("resnet18", 4, pretrained=bad)


def test_user_errors():
    with pytest.raises(OctlensError, match="unknown model 'resnet17'"):
        create_model("resnet17", 4)
    with pytest.raises(OctlensError, match="only ViTs take --patch-size"):
        create_model("resnet18", 4, patch_size=16)
    with pytest.raises(OctlensError, match="no such weights file"):
        create_model("resnet18", 4, pretrained="missing.safetensors")


def test_hub_weights_offline_fail_with_a_clear_message():
    code = (
        "from octlens.models import create_model\n"
        "from octlens.errors import OctlensError\n"
        "try:\n    create_model('resnet18', 4, pretrained='hub')\n"
        "except OctlensError as e:\n    print('OCTLENS', e)\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert "OCTLENS could not fetch pretrained 'resnet18' weights from the hub" in result.stdout
    assert "local weights file" in result.stdout


def test_hub_weights_fail_in_seconds_when_the_host_cannot_be_reached(monkeypatch):
    import socket
    import time

    import huggingface_hub
    import timm

    calls = []

    def unreachable(address, timeout=None):
        calls.append((address, timeout))
        raise OSError(101, "Network is unreachable")

    def no_timm(*args, **kwargs):
        raise AssertionError("timm must not start its retries")

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(socket, "create_connection", unreachable)
    monkeypatch.setattr(timm, "create_model", no_timm)
    started = time.perf_counter()
    with pytest.raises(OctlensError, match=r"cannot be reached \(Network is unreachable\)"):
        create_model("resnet18", 4, pretrained="hub")
    assert time.perf_counter() - started < 5
    assert calls and calls[0][0][1] == 443 and calls[0][1] <= 5


def test_precision_auto_measures_in_fp32_on_every_cpu(monkeypatch):
    from octlens.runtime import cpu_has_native_bf16, resolve_precision

    cpu = torch.device("cpu")
    for forced, training in (("1", "bf16"), ("0", "fp32")):
        monkeypatch.setenv("OCTLENS_CPU_BF16", forced)
        assert cpu_has_native_bf16() == (forced == "1")
        assert resolve_precision("auto", cpu).name == training
        assert resolve_precision("auto", cpu, measuring=True).name == "fp32"
    assert resolve_precision("bf16", cpu, measuring=True).name == "bf16"
    with pytest.raises(OctlensError, match=r"^precision 'fp64': choose one of"):
        resolve_precision("fp64", cpu)


def test_a_conv_stem_vit_keeps_the_token_grid_and_its_tokens_shift_with_the_image():
    torch.manual_seed(0)
    model = create_model("vit_tiny", 4, img_size=64, patch_size=8, stem="conv", **TINY_VIT).eval()
    assert is_vit(model) and model.patch_embed.grid_size == (8, 8)
    strides = [m.stride for m in model.patch_embed.proj if isinstance(m, torch.nn.Conv2d)]
    assert strides == [(2, 2)] * 3 + [(1, 1)]  # log2(8) stride-2 convolutions, then 1x1
    assert model(torch.randn(2, 1, 64, 64)).shape == (2, 4)
    # the stem's total stride is the patch size, so its tokens lie on the patch grid: shifting
    # the scan by one patch shifts the tokens by one (away from the zero-padded borders)
    images = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        tokens = model.patch_embed(images).reshape(1, 8, 8, -1)
        shifted = model.patch_embed(images.roll(8, dims=3)).reshape(1, 8, 8, -1)
    torch.testing.assert_close(shifted[:, :, 3:7], tokens[:, :, 2:6], atol=1e-5, rtol=1e-4)


def test_conv_stem_errors_are_one_line():
    for model, settings, message in [
        ("vit_tiny", {"patch_size": 12}, "power-of-two"),
        ("resnet18", {}, "not a ViT"),
        ("vit_tiny", {"patch_size": 16, "stem": "convnext"}, "choose patch or conv"),
        ("vit_tiny", {"patch_size": 16, "pretrained": "vit.safetensors"}, "no pretrained weights"),
    ]:
        settings = {"stem": "conv", **settings}
        with pytest.raises(OctlensError, match=message) as error:
            create_model(model, 4, img_size=48 if model == "vit_tiny" else None, **settings)
        assert "\n" not in str(error.value)
