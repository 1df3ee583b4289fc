"""The out-of-distribution check: quiet on every real and synthetic B-scan, loud on pictures."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from octlens.data.images import is_image_file
from octlens.data.oct_check import colour_spread, oct_warnings


def _gray(array: np.ndarray) -> np.ndarray:
    return np.asarray(Image.fromarray(array).convert("L"))


def test_no_real_dev_or_synthetic_scan_is_warned_about(real_dev, tiny_data):
    real = sorted(path for path in real_dev.rglob("*") if is_image_file(path))
    assert len(real) == 139
    scans = real + sorted(tiny_data.glob("*/*/*.jpeg"))
    warned = {}
    for path in scans:
        with Image.open(path) as image:
            reasons = oct_warnings(np.asarray(image.convert("L")), colour_spread(image))
        if reasons:
            warned[path.name] = reasons
    assert not warned


@pytest.mark.parametrize(
    ("picture", "reason"),
    [
        ("astronaut", "colour"),  # a colour photograph
        ("retina", "colour"),  # a fundus photograph: the other retinal image people have
        ("camera", "band"),  # grayscale photograph
        ("moon", "dark background"),
        ("text", "dark background"),
        ("coins", "band"),
        ("horse", "darker than its surroundings"),  # a black silhouette on white
    ],
)
def test_pictures_that_are_not_b_scans_are_warned_about(picture, reason):
    data = pytest.importorskip("skimage.data")
    array = getattr(data, picture)()
    if array.dtype == bool:
        array = array.astype(np.uint8) * 255
    image = Image.fromarray(array.astype(np.uint8))
    reasons = oct_warnings(_gray(np.asarray(image)), colour_spread(image))
    assert any(reason in text for text in reasons), reasons


def test_gray_stored_as_rgb_is_not_colour():
    gray = np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)
    assert colour_spread(Image.fromarray(np.dstack([gray] * 3))) == 0.0
    assert colour_spread(Image.fromarray(gray)) == 0.0
