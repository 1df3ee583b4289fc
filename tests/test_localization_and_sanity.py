"""Localization metrics by hand and against scikit-learn; sanity-check similarity against scipy and
scikit-image; the randomization cascade on real models."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score

from octlens.audit.lesions import LESION_PREDICTED, localization_scores, localization_summary
from octlens.audit.localization import (
    energy_in_mask,
    mass_share,
    pixel_auroc,
    pointing_game,
    within_retina_auroc,
)
from octlens.audit.priors import RETINA, THICKEST, retina_prior, thickest_retina_prior
from octlens.audit.sanity import (
    PASS_BELOW,
    cascading_randomization,
    randomization_stages,
    spearman_correlation,
    structural_similarity,
)
from octlens.explain import GradCAM
from octlens.explain.base import Explainer
from octlens.models import create_model


def _mask(rows: slice, cols: slice, size: int = 16) -> torch.Tensor:
    mask = torch.zeros(size, size, dtype=torch.bool)
    mask[rows, cols] = True
    return mask


def test_pointing_game_hits_inside_within_tolerance_and_skips_empty_masks():
    lesion = _mask(slice(4, 6), slice(4, 6))
    maps = torch.zeros(4, 16, 16)
    maps[0, 5, 5] = 1.0  # inside
    maps[1, 5, 8] = 1.0  # 3 px right of the lesion
    maps[2, 12, 12] = 1.0  # far away
    masks = torch.stack([lesion, lesion, lesion, torch.zeros(16, 16, dtype=torch.bool)])
    hits = pointing_game(maps, masks, tolerance=3)
    assert hits[:3].tolist() == [1.0, 1.0, 0.0] and math.isnan(hits[3])
    assert pointing_game(maps[1:2], masks[1:2], tolerance=2).item() == 0.0


def test_energy_counts_positive_mass_only():
    lesion = _mask(slice(0, 8), slice(0, 16))  # top half
    maps = torch.zeros(1, 16, 16)
    maps[0, 2, 2] = 3.0  # inside
    maps[0, 12, 2] = 1.0  # outside
    maps[0, 13, 3] = -5.0  # negative evidence is not attention
    assert energy_in_mask(maps, lesion[None]).item() == pytest.approx(0.75)
    assert mass_share(torch.zeros(1, 16, 16), lesion[None]).item() == 0.0


def test_pixel_auroc_equals_scikit_learn_with_ties():
    generator = torch.Generator().manual_seed(0)
    maps = torch.randint(0, 5, (3, 12, 12), generator=generator).float()  # many ties
    masks = torch.rand(3, 12, 12, generator=generator) < 0.3
    ours = pixel_auroc(maps, masks)
    for i in range(3):
        expected = roc_auc_score(masks[i].flatten().numpy(), maps[i].flatten().numpy())
        assert ours[i].item() == pytest.approx(expected, abs=1e-6)
    assert math.isnan(pixel_auroc(maps[:1], torch.zeros(1, 12, 12, dtype=torch.bool)).item())


def test_within_retina_auroc_equals_scikit_learn_on_the_retina_pixels_alone():
    generator = torch.Generator().manual_seed(2)
    maps = torch.randint(0, 6, (4, 12, 12), generator=generator).float()  # many ties
    retina = torch.zeros(4, 12, 12, dtype=torch.bool)
    retina[:, 3:9] = True
    masks = (torch.rand(4, 12, 12, generator=generator) < 0.3) & retina
    masks[3, 0, 0] = True  # a lesion pixel off the retina counts on neither side
    ours = within_retina_auroc(maps, masks, retina)
    for i in range(4):
        inside = retina[i].flatten().numpy()
        expected = roc_auc_score(
            masks[i].flatten().numpy()[inside], maps[i].flatten().numpy()[inside]
        )
        assert ours[i].item() == pytest.approx(expected, abs=1e-6)
    # a map uniform over the retina: 0.5 by construction, though it finds the retina perfectly
    uniform = retina_prior(retina)
    assert within_retina_auroc(uniform, masks, retina).tolist() == [0.5] * 4
    assert (pixel_auroc(uniform[:3], masks[:3]) > 0.75).all()
    off_retina_only = torch.zeros(1, 12, 12, dtype=torch.bool)
    off_retina_only[0, 0, 0] = True
    assert math.isnan(within_retina_auroc(maps[:1], off_retina_only, retina[:1]).item())


def test_thickest_retina_prior_peaks_in_the_middle_of_the_thickest_part():
    """A flat band 4 rows thick with a bump 10 rows thick over columns 20-23: the prior is
    highest in the bump's middle row, zero off the retina, and every retina pixel positive."""
    retina = torch.zeros(1, 32, 48, dtype=torch.bool)
    retina[0, 14:18] = True
    retina[0, 10:20, 20:24] = True
    prior = thickest_retina_prior(retina)[0]
    row, column = divmod(int(prior.argmax()), 48)
    assert 20 <= column <= 23 and row in (14, 15)  # rows 10-19: middle 14.5
    assert (prior[~retina[0]] == 0).all() and (prior[retina[0]] > 0).all()
    assert prior[15, 21] > prior[15, 5] and prior[15, 21] > prior[10, 21]


def test_a_method_is_credited_only_where_it_beats_the_stronger_prior():
    """Lesions sit in the thick part of the retina. A map of the lesion itself is credited on
    every score; the thickest-retina prior, offered as a method, is credited on none (its gap
    to itself is exactly zero); scans predicted as another class do not count."""
    n = 14
    retina = torch.zeros(n, 64, 64, dtype=torch.bool)
    retina[:, 28:34] = True
    retina[:, 20:40, 8:56] = True  # thick over most of the width: the prior's peak is far left
    lesions = torch.zeros_like(retina)
    for i in range(n):
        lesions[i, 26:30, 40 + (i % 6) : 44 + (i % 6)] = True
    lesions[-2:] = False  # annotated scans without a lesion
    annotated = torch.ones(n, dtype=torch.bool)
    predicted = torch.ones(n, dtype=torch.bool)
    predicted[0] = False
    oracle = lesions.float() + 0.01 * torch.rand(
        n, 64, 64, generator=torch.Generator().manual_seed(0)
    )
    methods = {
        "oracle": localization_scores(oracle, lesions, retina),
        "prior": localization_scores(thickest_retina_prior(retina), lesions, retina),
    }
    random = torch.rand(n, 64, 64, generator=torch.Generator().manual_seed(1))
    summary = localization_summary(methods, random, lesions, retina, annotated, predicted)
    assert (summary.n_annotated, summary.n_with_lesion, summary.n_lesion_predicted) == (14, 12, 11)
    assert set(summary.credited("oracle")) == {
        "within_retina_auroc",
        "energy_in_lesion",
        "pointing_game",
    }
    assert summary.credited("prior") == []
    assert summary.stronger_prior["within_retina_auroc"] == THICKEST
    retina_scores = summary.references[RETINA][LESION_PREDICTED]
    assert retina_scores["within_retina_auroc"] == 0.5
    assert summary.references[THICKEST][LESION_PREDICTED]["within_retina_auroc"] > 0.5
    gap = summary.beyond_prior["prior"]["within_retina_auroc"]
    assert gap.mean == gap.low == gap.high == 0.0


def test_spearman_and_ssim_equal_scipy_and_scikit_image():
    from skimage.metrics import structural_similarity as skimage_ssim

    generator = torch.Generator().manual_seed(1)
    a = torch.rand(3, 24, 24, generator=generator)
    b = a + 0.5 * torch.rand(3, 24, 24, generator=generator)
    b[2] = torch.round(b[2] * 3)  # ties
    rho = spearman_correlation(a, b)
    ssim = structural_similarity(a, b)
    for i in range(3):
        assert rho[i].item() == pytest.approx(spearmanr(a[i].flatten(), b[i].flatten())[0])
        x = (a[i] - a[i].min()) / (a[i].max() - a[i].min())
        y = (b[i] - b[i].min()) / (b[i].max() - b[i].min())
        expected = skimage_ssim(
            x.double().numpy(),
            y.double().numpy(),
            data_range=1.0,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
        )
        assert ssim[i].item() == pytest.approx(expected, abs=1e-5)
    assert spearman_correlation(a[:1], torch.zeros(1, 24, 24)).item() == 0.0


def test_stages_run_from_the_head_down_to_the_stem():
    resnet = [name for name, _ in randomization_stages(create_model("resnet18", 4))]
    assert resnet[:3] == ["head", "layer4.1", "layer4.0"] and resnet[-2:] == ["layer1.0", "stem"]
    vit = create_model("vit_tiny", 4, img_size=32, patch_size=8, depth=3)
    assert [name for name, _ in randomization_stages(vit)] == [
        "head",
        "blocks.2",
        "blocks.1",
        "blocks.0",
        "stem",
    ]


class ImageIntensity(Explainer):
    """A 'method' that ignores the model: the image itself, as edge-detector-like maps are."""

    def _explain(self, images, targets):
        logits = self.model(images)
        chosen = logits.argmax(dim=1) if targets is None else targets
        return images[:, 0], chosen


def test_cascade_passes_grad_cam_and_fails_a_model_independent_map():
    torch.manual_seed(0)
    model = create_model("resnet18", 4).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    images = torch.randn(3, 1, 64, 64)

    gradcam = cascading_randomization(model, GradCAM, images)
    assert gradcam.stages[0] == "head" and gradcam.spearman.shape == (10, 3)
    assert gradcam.passed and gradcam.spearman[1].median() < PASS_BELOW

    blind = cascading_randomization(model, ImageIntensity, images)
    assert not blind.passed
    torch.testing.assert_close(blind.spearman, torch.ones(10, 3))
    assert np.allclose(blind.ssim.numpy(), 1.0, atol=1e-6)

    for key, value in model.state_dict().items():  # the cascade works on a copy
        torch.testing.assert_close(value, before[key])
