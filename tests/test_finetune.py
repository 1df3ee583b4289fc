"""Fine-tuning from a run: weights really loaded, frozen parts really frozen, decay as stated."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import TINY_VIT, tiny_config
from octlens.errors import OctlensError
from octlens.models import create_model
from octlens.training import TrainConfig, load_checkpoint, train
from octlens.training.finetune import InitRun, parameter_groups


def _state(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path).model_state()


def test_init_loads_the_run_s_weights_so_outputs_are_equal_before_training(
    tiny_resnet_run, tiny_vit_run
):
    torch.manual_seed(0)
    images = torch.randn(3, 1, 32, 32)
    for run in (tiny_resnet_run, tiny_vit_run):
        checkpoint = load_checkpoint(run)
        recipe = InitRun(checkpoint).recipe()
        fresh = create_model(
            recipe["model"],
            num_classes=4,
            img_size=recipe["img_size"],
            patch_size=recipe["patch_size"],
            **recipe["model_kwargs"],
        ).eval()
        assert not torch.allclose(fresh(images), checkpoint.build_model()(images))
        record = InitRun(checkpoint).load_into(fresh, checkpoint.classes)
        assert record["head"] == "kept" and record["epoch"] == checkpoint.meta["epoch"]
        torch.testing.assert_close(fresh(images), checkpoint.build_model()(images))


def test_a_run_from_init_inherits_the_recipe_and_normalization_and_records_its_start(
    tiny_data, tiny_vit_run, tmp_path
):
    # --init alone: the model, patch size, its settings and the image size are the run's
    result = train(
        TrainConfig(
            data=tiny_data,
            out=tmp_path / "ft",
            init=tiny_vit_run,
            epochs=1,
            batch_size=8,
            num_workers=0,
        ),
        verbose=False,
    )
    meta = json.loads((result.run_dir / "last.json").read_text())
    initial = json.loads((tiny_vit_run / "best.json").read_text())
    assert meta["model"] == initial["model"] and meta["img_size"] == 32
    assert meta["normalization"] == initial["normalization"]
    started = meta["fine_tuning"]
    assert started["init"]["checkpoint"] == str(tiny_vit_run / "best.safetensors")
    assert started["init"]["head"] == "kept" and started["layer_decay"] == 0.75
    assert started["freeze"] == "none"
    # full fine-tuning moved the body
    before, after = _state(tiny_vit_run), _state(result.run_dir / "last.safetensors")
    assert not torch.equal(before["blocks.0.attn.qkv.weight"], after["blocks.0.attn.qkv.weight"])


def test_freeze_backbone_trains_the_classifier_only(tiny_data, tiny_resnet_run, tmp_path):
    config = tiny_config(
        tiny_data, tmp_path / "probe", init=tiny_resnet_run, freeze="backbone", epochs=2
    )
    train(config, verbose=False)
    before, after = _state(tiny_resnet_run), _state(tmp_path / "probe" / "last.safetensors")
    assert before.keys() == after.keys()
    changed = sorted(key for key in before if not torch.equal(before[key], after[key]))
    # BatchNorm statistics included: the backbone is kept in eval mode, not only without grads
    assert changed == ["fc.bias", "fc.weight"]


def test_layer_decay_scales_each_layer_s_learning_rate_from_the_head_down():
    model = create_model("vit_tiny", 4, img_size=32, patch_size=8, **TINY_VIT)
    groups = parameter_groups(model, lr=1.0, weight_decay=0.05, decay=0.5)
    rate = {}
    for group in groups:
        for parameter in group["params"]:
            rate[parameter.data_ptr()] = group["lr"]
    named = dict(model.named_parameters())
    # timm's layers for a depth-2 ViT: embeddings 0, blocks 1 and 2, head 3
    expected = {
        "patch_embed.proj.weight": 0.5**3,
        "blocks.0.attn.qkv.weight": 0.5**2,
        "blocks.1.mlp.fc1.weight": 0.5,
        "head.weight": 1.0,
    }
    for name, lr in expected.items():
        assert rate[named[name].data_ptr()] == pytest.approx(lr), name
    assert len(rate) == len(named)  # every parameter in one group
    flat = parameter_groups(model, lr=1.0, weight_decay=0.05, decay=1.0)
    assert {group["lr"] for group in flat} == {1.0}


def _image_folder(root: Path, classes: tuple[str, ...], per_class: int = 6) -> Path:
    rng = np.random.default_rng(0)
    for label in classes:
        (root / label).mkdir(parents=True)
        for k in range(per_class):
            pixels = rng.integers(0, 255, size=(40, 48), dtype=np.uint8)
            Image.fromarray(pixels).save(root / label / f"{label}-{k // 2 + 1}-{k}.png")
    return root


def test_other_classes_get_a_new_head_and_keep_the_body(tiny_resnet_run, tmp_path):
    data = _image_folder(tmp_path / "two", ("CNV", "NORMAL"))
    out = tmp_path / "two-class"
    train(tiny_config(data, out, init=tiny_resnet_run, lr=1e-12), verbose=False)
    meta = json.loads((out / "last.json").read_text())
    assert meta["fine_tuning"]["init"]["head"] == "new" and meta["classes"] == ["CNV", "NORMAL"]
    before, after = _state(tiny_resnet_run), _state(out / "last.safetensors")
    assert after["fc.weight"].shape == (2, 512)
    torch.testing.assert_close(before["layer1.0.conv1.weight"], after["layer1.0.conv1.weight"])


def test_a_conv_stem_vit_fine_tunes_from_its_run(tiny_data, tmp_path):
    """The demo's ViT has a convolutional stem, which has no ``patch_embed.proj``: starting a run
    from it loads every weight (outputs equal before training), not a KeyError from deep inside."""
    stem_vit = {**TINY_VIT, "stem": "conv"}
    source = tmp_path / "stem"
    train(
        tiny_config(tiny_data, source, model="vit_tiny", patch_size=8, model_kwargs=stem_vit),
        verbose=False,
    )
    checkpoint = load_checkpoint(source)
    fresh = create_model("vit_tiny", 4, img_size=32, patch_size=8, **stem_vit).eval()
    InitRun(checkpoint).load_into(fresh, checkpoint.classes)
    images = torch.randn(2, 1, 32, 32)
    torch.testing.assert_close(fresh(images), checkpoint.build_model()(images))
    train(tiny_config(tiny_data, tmp_path / "tuned", init=source), verbose=False)
    assert (tmp_path / "tuned" / "best.safetensors").is_file()


def test_a_vit_fine_tunes_at_another_image_size(tiny_data, tiny_vit_run, tmp_path):
    out = tmp_path / "bigger"
    train(tiny_config(tiny_data, out, init=tiny_vit_run, img_size=48, lr=1e-12), verbose=False)
    model = load_checkpoint(out / "last.safetensors").build_model()
    assert model(torch.randn(1, 1, 48, 48)).shape == (1, 4)


def test_fine_tuning_mistakes_are_one_line_errors(
    tiny_data, tiny_resnet_run, tiny_vit_run, tmp_path
):
    with pytest.raises(OctlensError, match="no such checkpoint"):
        train(tiny_config(tiny_data, tmp_path / "a", init=tmp_path / "nowhere"), verbose=False)
    with pytest.raises(OctlensError, match=r"best.safetensors.*another model size|belong"):
        train(
            tiny_config(tiny_data, tmp_path / "b", init=tiny_resnet_run, model="resnet50"),
            verbose=False,
        )
    with pytest.raises(OctlensError, match=r"best.safetensors.*(another model size|belong)"):
        # another model named: the ViT's patch size is not inherited, its weights do not fit
        train(
            tiny_config(tiny_data, tmp_path / "v", init=tiny_vit_run, model="resnet18"),
            verbose=False,
        )
    with pytest.raises(ValueError, match="not both"):
        tiny_config(tiny_data, tmp_path / "c", init=tiny_resnet_run, pretrained="hub")
    with pytest.raises(ValueError, match="--freeze needs weights"):
        tiny_config(tiny_data, tmp_path / "d", freeze="backbone")
