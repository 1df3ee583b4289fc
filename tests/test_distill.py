"""Distillation: the loss by hand, the teacher's input as it was trained, the run's record."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from helpers import TINY_VIT, tiny_config
from octlens.data.transforms import Normalization, renormalize
from octlens.errors import OctlensError
from octlens.runtime import resolve_precision
from octlens.training import TrainConfig, load_checkpoint, train
from octlens.training.distill import Teacher, distillation_loss

FP32 = resolve_precision("fp32", torch.device("cpu"))


def _config(data: Path, out: Path, **overrides) -> TrainConfig:
    return tiny_config(data, out, **{"seed": 3, **overrides})


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_the_loss_is_the_weighted_label_and_teacher_terms_computed_by_hand():
    student = np.array([[2.0, 0.5, -1.0, 0.0], [0.1, 0.2, 0.3, 3.0]])
    teacher = np.array([[1.0, 1.5, -0.5, 0.0], [0.0, 0.0, 0.0, 4.0]])
    labels = np.array([1, 3])
    weight, temperature = 0.3, 2.5
    hard = -np.log(_softmax(student)[np.arange(2), labels]).mean()
    p_teacher, p_student = _softmax(teacher / temperature), _softmax(student / temperature)
    kl = (p_teacher * (np.log(p_teacher) - np.log(p_student))).sum(axis=1).mean()
    expected = (1 - weight) * hard + weight * temperature**2 * kl
    label_loss = torch.nn.CrossEntropyLoss()(torch.tensor(student), torch.tensor(labels))
    loss = distillation_loss(
        torch.tensor(student), torch.tensor(teacher), label_loss, weight, temperature
    )
    assert loss.item() == pytest.approx(expected, rel=1e-9)


def test_weight_one_ignores_the_labels_and_a_student_that_agrees_has_no_loss():
    torch.manual_seed(0)
    teacher = torch.randn(5, 4)
    criterion = torch.nn.CrossEntropyLoss()
    gradients = []
    for labels in (torch.tensor([0, 1, 2, 3, 0]), torch.tensor([3, 3, 3, 3, 3])):
        student = torch.randn(5, 4, generator=torch.Generator().manual_seed(1), requires_grad=True)
        distillation_loss(student, teacher, criterion(student, labels), 1.0, 2.0).backward()
        gradients.append(student.grad)
    torch.testing.assert_close(gradients[0], gradients[1])
    labels = torch.tensor([0, 1, 2, 3, 0])
    same = distillation_loss(teacher, teacher, criterion(teacher, labels), 1.0, 3.0)
    assert same.item() == pytest.approx(0.0, abs=1e-6)
    label_loss = criterion(teacher * 2, labels)
    assert distillation_loss(teacher * 2, teacher, label_loss, 0.0, 2.0).item() == (
        pytest.approx(label_loss.item())
    )


def test_renormalize_gives_what_the_other_normalization_gives_the_same_pixels():
    pixels = torch.rand(2, 1, 8, 8)
    source, target = Normalization(0.2, 0.1), Normalization(0.45, 0.3)
    torch.testing.assert_close(
        renormalize((pixels - 0.2) / 0.1, source, target), (pixels - 0.45) / 0.3
    )


def test_the_teacher_sees_the_pixels_at_its_own_size_and_normalization(tiny_resnet_run):
    checkpoint = load_checkpoint(tiny_resnet_run)
    student_normalization = Normalization(0.6, 0.25)  # not the teacher's
    teacher = Teacher(tiny_resnet_run, checkpoint.classes, 48, student_normalization, FP32)
    pixels = torch.rand(3, 1, 48, 48)
    student_input = (pixels - 0.6) / 0.25
    own = checkpoint.normalization
    resized = F.interpolate(pixels, size=(32, 32), mode="bilinear", antialias=True)
    model = checkpoint.build_model()
    expected = model((resized - own.mean) / own.std)
    torch.testing.assert_close(teacher.logits(student_input), expected, atol=1e-4, rtol=1e-4)
    assert not any(parameter.requires_grad for parameter in teacher.model.parameters())


def test_a_teacher_that_cannot_teach_is_a_one_line_error_before_the_run_folder_exists(
    tiny_data, tiny_resnet_run, tmp_path
):
    with pytest.raises(OctlensError, match="teacher's classes") as error:
        Teacher(tiny_resnet_run, ["A", "B"], 32, Normalization(0.5, 0.2), FP32)
    assert "\n" not in str(error.value)
    for missing in (tmp_path / "nowhere", tmp_path / "nowhere" / "best.safetensors"):
        with pytest.raises(OctlensError, match="no such checkpoint"):
            train(_config(tiny_data, tmp_path / "student", teacher=missing), verbose=False)
        assert not (tmp_path / "student").exists()


def test_a_distilled_run_records_its_teacher_learns_otherwise_and_leaves_the_teacher_alone(
    tiny_data, tiny_resnet_run, tmp_path
):
    teacher_file = tiny_resnet_run / "best.safetensors"
    before = hashlib.sha256(teacher_file.read_bytes()).hexdigest()
    vit = {
        "model": "vit_tiny",
        "patch_size": 8,
        "model_kwargs": TINY_VIT,
    }
    distill = {"teacher": tiny_resnet_run, "distill_weight": 0.7, "distill_temperature": 3.0}

    def run(name: str, **settings):
        train(_config(tiny_data, tmp_path / name, **vit, **settings), verbose=False)
        return load_checkpoint(tmp_path / name / "last.safetensors")

    plain, distilled = run("plain"), run("student", **distill)
    assert distilled.meta["distillation"] == {
        "teacher": str(teacher_file),
        "teacher_model": "resnet18",
        "teacher_epoch": 1,
        "weight": 0.7,
        "temperature": 3.0,
    }
    assert any(not torch.equal(plain.tensors[key], distilled.tensors[key]) for key in plain.tensors)
    # the history's train loss is the label term: with weights that do not move, a distilled
    # run records exactly the plain run's loss (same scans, same augmentation)
    frozen_plain, frozen_distilled = run("p0", lr=1e-12), run("s0", lr=1e-12, **distill)
    assert frozen_distilled.meta["history"][0]["train_loss"] == pytest.approx(
        frozen_plain.meta["history"][0]["train_loss"], rel=1e-5
    )
    assert hashlib.sha256(teacher_file.read_bytes()).hexdigest() == before
