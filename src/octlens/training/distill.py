"""Knowledge distillation: a student learns from a trained octlens run as well as from the labels.

A ViT trained from scratch on a few hundred scans has no convolutional prior to lean on; a
trained CNN's answers carry that prior. DeiT (Touvron et al., 2021) trains ViTs with a convnet
teacher; octlens uses the plain logit form of Hinton et al. (2015), which needs no extra token or
head, so the student is an ordinary model that every explainer reads as it reads any other:

.. math::

    L = (1 - w)\\,\\mathrm{CE}(y, s) + w\\,T^2\\,
        \\mathrm{KL}\\big(\\mathrm{softmax}(t / T)\\,\\|\\,\\mathrm{softmax}(s / T)\\big)

with student logits :math:`s`, teacher logits :math:`t` on the *same augmented batch* (the
teacher sees what the student sees; "consistent teaching", Beyer et al., 2022), weight
:math:`w` and temperature :math:`T` (the :math:`T^2` keeps the gradient scale of the soft term
independent of :math:`T`). The teacher's input is re-normalized and resized from the student's,
so a teacher trained with another normalization or image size still sees what it was trained on.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch.nn import functional as F

from octlens.data.transforms import Normalization, renormalize
from octlens.errors import OctlensError
from octlens.models import is_vit
from octlens.runtime import PrecisionPlan
from octlens.training.checkpoint import load_checkpoint


class Teacher:
    """A trained run in eval mode that answers the student's batches."""

    def __init__(
        self,
        path: Path,
        classes: list[str],
        img_size: int,
        student_normalization: Normalization,
        plan: PrecisionPlan,
    ) -> None:
        checkpoint = load_checkpoint(path)
        if checkpoint.classes != classes:
            raise OctlensError(
                f"{checkpoint.path}: the teacher's classes {checkpoint.classes} are not the "
                f"data's {classes} (same names, same order)"
            )
        self.checkpoint = checkpoint
        self.model = checkpoint.build_model().to(plan.device).eval()
        self.channels_last = not is_vit(self.model)
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        for parameter in self.model.parameters():
            parameter.requires_grad_(False)
        self.plan = plan
        self.student_size = img_size
        self.student_normalization = student_normalization

    @torch.no_grad()
    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """The teacher's fp32 logits for a batch prepared for the student."""
        inputs = renormalize(images, self.student_normalization, self.checkpoint.normalization)
        if self.checkpoint.img_size != self.student_size:
            size = (self.checkpoint.img_size,) * 2
            inputs = F.interpolate(inputs, size=size, mode="bilinear", antialias=True)
        if self.channels_last:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        with self.plan.autocast():
            return self.model(inputs).float()

    def record(self, weight: float, temperature: float) -> dict[str, object]:
        """What the student's run records about its teacher."""
        return {
            "teacher": str(self.checkpoint.path),
            "teacher_model": self.checkpoint.meta["model"]["name"],
            "teacher_epoch": self.checkpoint.meta["epoch"],
            "weight": weight,
            "temperature": temperature,
        }


def distillation_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    label_loss: torch.Tensor,
    weight: float,
    temperature: float,
) -> torch.Tensor:
    """The module docstring's :math:`L` from the label term ``label_loss`` (the criterion's, with
    its smoothing and class weights) and the logits of student and teacher."""
    soft = F.kl_div(
        F.log_softmax(student / temperature, dim=1),
        F.log_softmax(teacher / temperature, dim=1),
        reduction="batchmean",
        log_target=True,
    )
    return (1 - weight) * label_loss + weight * temperature**2 * soft
