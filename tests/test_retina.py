"""The label-free retina finder: against synthetic masks, a drawn case, fill, and real scans."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from octlens.data.retina import (
    _best_path,
    burned_in_overlays,
    find_retina,
    retina_mask,
    scanner_fill,
)
from octlens.data.synth import plan_scans, render_job
from octlens.errors import OctlensError


def test_mean_iou_against_synthetic_retina_masks_is_at_least_0_9():
    jobs = plan_scans(10, seed=7)[::2]  # 20 scans, every class, 496 x 512 like OCT2017
    ious = []
    for job in jobs:
        scan = render_job(job)
        found = retina_mask(scan.image)
        ious.append((found & scan.retina).sum() / (found | scan.retina).sum())
    assert np.mean(ious) >= 0.9
    assert min(ious) >= 0.8


def test_boundaries_of_a_drawn_retina():
    rng = np.random.default_rng(0)
    image = rng.uniform(5, 25, size=(248, 256))  # dark vitreous and noise
    columns = np.arange(256)
    ilm = (80 + 10 * np.sin(columns / 40)).astype(int)
    for col in columns:
        top = ilm[col]
        image[top : top + 60, col] += 90  # inner and outer retina
        image[top + 60 : top + 66, col] += 200  # RPE, the brightest band
        image[top + 66 : top + 110, col] += 40  # choroid
    # OCT speckle scales with the signal; flat bands under weak added noise would be what a
    # drawn overlay looks like (see test_overlays.py), and are left out of the retina
    image *= rng.uniform(0.7, 1.3, size=image.shape)
    found = find_retina(np.clip(image, 0, 255).astype(np.uint8))
    assert not found.overlay.any()
    assert np.abs(found.ilm - ilm).max() <= 4
    assert np.abs(found.bruch - (ilm + 66)).max() <= 4


def test_scanner_fill_is_found_and_kept_out_of_the_retina():
    scan = render_job(plan_scans(4, seed=1)[0])
    image = scan.image.copy()
    image[:40, :200] = 255  # a white registration wedge in the top-left corner
    expected = scanner_fill(scan.image)  # the generator's own fill, if it drew one
    expected[:40, :200] = True
    assert (scanner_fill(image) == expected).all()
    fill = scanner_fill(image)
    found = find_retina(image)
    assert not (found.mask() & fill).any()
    truth_iou = (found.mask() & scan.retina).sum() / (found.mask() | scan.retina).sum()
    assert truth_iou >= 0.85


def test_real_scans_get_a_plausible_retina(real_dev):
    paths = sorted(real_dev.rglob("*.jp*g"))[::10]
    for path in paths:
        image = np.asarray(Image.open(path).convert("L"))
        found = find_retina(image)
        thickness = (found.bruch - found.ilm) * 496 / image.shape[0]
        # Macular retina is 150-700 um thick: about 40-180 px at 3.9 um/px; allow pathology.
        assert np.mean((thickness > 30) & (thickness < 260)) >= 0.9, path.name


def test_grayscale_input_is_required():
    with pytest.raises(ValueError, match="grayscale"):
        find_retina(np.zeros((4, 4, 3), dtype=np.uint8))


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 5).flatmap(
        lambda height: st.lists(
            st.lists(st.integers(-3, 3), min_size=height, max_size=height), min_size=1, max_size=5
        )
    ),
    st.integers(1, 2),
)
def test_best_path_scores_as_high_as_any_path_found_by_brute_force(columns, max_jump):
    score = np.array(columns, dtype=np.float32).T  # (height, width)
    height, width = score.shape
    path = _best_path(score, max_jump).astype(int)
    assert all(abs(a - b) <= max_jump for a, b in itertools.pairwise(path))
    best = max(
        sum(score[row, column] for column, row in enumerate(rows))
        for rows in itertools.product(range(height), repeat=width)
        if all(abs(a - b) <= max_jump for a, b in itertools.pairwise(rows))
    )
    assert sum(score[row, column] for column, row in enumerate(path)) == best


@pytest.mark.parametrize("bits", [10, 12, 16])
def test_detector_data_is_scaled_by_its_range_not_taken_for_fill(bits):
    """12-bit data in a 16-bit array is read as the same scan, as files of it are."""
    scan = render_job(plan_scans(4, seed=1)[0])
    expected = find_retina(scan.image)
    high = 2**bits - 1
    # values 0..high, so the range that holds them is `bits`
    deep = np.round(scan.image.astype(np.float64) * high / 255).astype(np.uint16)
    deep[0, 0] = high
    found = find_retina(deep)
    iou = (found.mask() & expected.mask()).sum() / (found.mask() | expected.mask()).sum()
    assert iou >= 0.99
    float_255 = find_retina(scan.image.astype(np.float32))  # float [0, 255] as files give it
    assert (float_255.mask() == expected.mask()).all()


@pytest.mark.parametrize(
    ("pixels", "message"),
    [
        (np.full((64, 64), np.nan, dtype=np.float32), "NaN or infinity"),
        (np.full((64, 64), -3, dtype=np.int16), "negative pixel values"),
        (np.full((64, 64), 300.0), r"floating-point pixels in \[300, 300\]"),
    ],
)
def test_pixels_that_are_not_gray_levels_are_refused(pixels, message):
    with pytest.raises(OctlensError, match=message):
        find_retina(pixels)
    with pytest.raises(OctlensError, match=message):
        burned_in_overlays(pixels)
