"""Burned-in overlays: drawn where asked, coding the class by shape, and never taken for retina."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from octlens.audit.counterfactual import choose_donors, region_swap
from octlens.data.overlays import (
    BRIGHT,
    OVERLAY_KINDS,
    PLACES,
    SQUARE_LEVELS,
    draw_overlay,
    mark_box,
    smallest_scan,
)
from octlens.data.regions import edge_regions
from octlens.data.retina import burned_in_overlays, find_retina, scanner_fill
from octlens.data.synth import synthesize
from octlens.errors import OctlensError


def dev_scans(real_dev, every: int) -> list[np.ndarray]:
    paths = sorted(p for p in real_dev.rglob("*") if p.suffix in {".jpeg", ".png"})
    return [np.asarray(Image.open(path).convert("L")) for path in paths[::every]]


@pytest.mark.parametrize("kind", OVERLAY_KINDS)
def test_every_kind_codes_four_classes_by_a_different_mark_inside_its_box(kind):
    inks = []
    for code in range(4):
        image = np.zeros((496, 512), dtype=np.uint8)
        ink = draw_overlay(image, kind, code, "top-right")
        top, left, side = mark_box(image.shape, "top-right")
        assert ink.any() and not ink[:top].any() and not ink[:, :left].any()
        assert not ink[top + side :].any() and not ink[:, left + side :].any()
        if kind == "square":  # gray level codes the class, a black edge frames it
            assert image[top + side // 2, left + side // 2] == SQUARE_LEVELS[code]
            assert image[top, left] == 0
        else:  # shape codes the class, in one level
            assert set(np.unique(image[ink])) == {BRIGHT}
        inks.append(ink)
    if kind != "square":
        assert all((a != b).any() for i, a in enumerate(inks) for b in inks[i + 1 :])


def test_places_are_corners_and_edge_middles():
    shape = (496, 768)
    inset = round(0.02 * 496)
    assert mark_box(shape, "top-left")[:2] == (inset, inset)
    top, left, side = mark_box(shape, "bottom-right")
    assert (top + side, left + side) == (496 - inset, 768 - inset)
    top, left, side = mark_box(shape, "left")
    assert left == inset and abs(top + side / 2 - 248) <= 1
    top, left, side = mark_box(shape, "top")
    assert top == inset and abs(left + side / 2 - 384) <= 1


def test_bad_kind_code_or_place_is_refused():
    image = np.zeros((64, 64), dtype=np.uint8)
    with pytest.raises(ValueError, match="kind"):
        draw_overlay(image, "banner", 0)
    with pytest.raises(ValueError, match="code"):
        draw_overlay(image, "text", 4)
    with pytest.raises(ValueError, match="place"):
        draw_overlay(image, "text", 0, "centre")


@pytest.mark.slow
def test_no_overlay_kind_is_taken_for_retina_on_real_scans(real_dev):
    """The issue's failure: the finder took 58-93% of a textured corner mark for retina. Every
    kind, bright and mid-gray, at a corner and an edge (where it may cover the retina)."""
    inside, total = {kind: 0 for kind in OVERLAY_KINDS}, {kind: 0 for kind in OVERLAY_KINDS}
    for j, base in enumerate(dev_scans(real_dev, 23)):
        for k, kind in enumerate(OVERLAY_KINDS):
            for level in (BRIGHT, 128):
                for place in (PLACES[(j + k) % 4], PLACES[4 + (j + k) % 4]):
                    image = base.copy()
                    ink = draw_overlay(image, kind, (j + k) % 4, place, level)
                    inside[kind] += int((find_retina(image).mask() & ink).sum())
                    total[kind] += int(ink.sum())
    shares = {kind: inside[kind] / total[kind] for kind in OVERLAY_KINDS}
    assert max(shares.values()) <= 0.02, shares


def test_clean_real_scans_have_no_overlay_in_their_retina(real_dev):
    """Tissue is not a mark: on clean real scans almost nothing between the ILM and Bruch's
    membrane is called overlay (holes there would let region swaps move anatomy)."""
    for pixels in dev_scans(real_dev, 9):
        found = find_retina(pixels)
        rows = np.arange(pixels.shape[0])[:, None]
        between = (rows >= found.ilm[None]) & (rows <= found.bruch[None])
        assert (found.overlay & between).sum() <= 0.01 * between.sum()


def jpeg_round_trip(pixels: np.ndarray, quality: int = 90) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=quality)
    return np.asarray(Image.open(buffer))


def test_text_over_tissue_of_its_own_gray_is_found_after_jpeg(real_dev):
    """Mid-gray text over the retina at a side edge, JPEG-compressed with the scan: its strokes'
    surroundings are tissue of about their own gray, so most glyphs do not stand out alone (81%
    of the ink was taken for retina); they are found as ink of the level of the glyphs that do,
    and the strokes JPEG broke up as pixels of that level."""
    image = np.asarray(Image.open(next(real_dev.rglob("DME-7749420-104.jpeg"))).convert("L"))
    image = image.copy()
    ink = draw_overlay(image, "text", 1, "right", 128)
    found = find_retina(jpeg_round_trip(image))
    assert (found.mask() & ink).sum() <= 0.02 * ink.sum()
    assert (found.overlay & ink).sum() >= 0.95 * ink.sum()


def test_a_mark_is_found_through_its_own_gray_level_but_not_camouflaged_alone():
    """Two flat 128 squares 10 px apart on a 496-row scan: one over dark background (it stands
    out), one over noisy tissue of 100-156 (it does not). Alone, the camouflaged one is not
    called a mark; beside the other, it is ink of the same level close to a mark, and it is."""
    rng = np.random.default_rng(0)
    image = rng.uniform(0, 30, size=(496, 496))
    image[:, 240:340] = rng.uniform(100, 156, size=(496, 100))
    image[200:240, 250:290] = 128  # over tissue of its own gray
    camouflaged = np.zeros(image.shape, dtype=bool)
    camouflaged[200:240, 250:290] = True
    assert not (burned_in_overlays(image.astype(np.uint8)) & camouflaged).any()
    image[200:240, 200:240] = 128  # a twin over the dark background, 10 px to its left
    assert burned_in_overlays(image.astype(np.uint8))[camouflaged].all()


def test_a_mark_on_the_registration_fill_is_an_overlay_not_fill():
    rng = np.random.default_rng(0)
    image = rng.uniform(0, 30, size=(496, 512)).astype(np.uint8)
    image[:120, :] = 255  # a fill band along the top edge
    ink = draw_overlay(image, "arrow", 0, "top-left", BRIGHT)
    assert not (scanner_fill(image) & ink).any()  # not saturated: not fill
    assert (burned_in_overlays(image) & ink).sum() >= 0.98 * ink.sum()


def test_a_flat_textureless_scan_has_no_overlay():
    assert not burned_in_overlays(np.full((64, 64), 200, dtype=np.uint8)).any()


def small(array: np.ndarray, size: int, nearest: bool = False) -> np.ndarray:
    mode = Image.Resampling.NEAREST if nearest else Image.Resampling.BILINEAR
    return np.asarray(Image.fromarray(array).resize((size, size), mode))


def text_marked_real_scans(real_dev, size: int = 128):
    """Real 496 x 512 dev scans with no fill in the top-left corner, each with a text mark
    coding a class (0-3) there, at the model's size, with the retina and overlays found on the
    full-size scan; and the four marks' ink alone, drawn on a blank scan, at that size."""
    images, codes, retina, overlay = [], [], [], []
    bases = [
        base
        for base in dev_scans(real_dev, 1)
        if base.shape == (496, 512) and not scanner_fill(base)[:100, :100].any()
    ]
    for j, base in enumerate(bases[:24]):
        pixels = base.copy()
        draw_overlay(pixels, "text", j % 4, "top-left")
        found = find_retina(pixels)
        images.append(small(pixels, size) / 255.0)
        retina.append(small(found.mask().astype(np.uint8), size, nearest=True) > 0)
        overlay.append(small(found.overlay.astype(np.uint8), size, nearest=True) > 0)
        codes.append(j % 4)
    inks = [
        small(draw_overlay(np.zeros((496, 512), np.uint8), "text", c).astype(np.uint8) * 255, size)
        / 255.0
        for c in range(4)
    ]
    to = torch.from_numpy
    return (
        to(np.stack(images)).float()[:, None],
        torch.tensor(codes),
        to(np.stack(retina)),
        to(np.stack(overlay)),
        to(np.stack(inks)).float(),
    )


def test_a_model_that_reads_a_text_mark_on_real_scans_is_flagged_on_the_corners(real_dev):
    """The verdict the issue asks for: a model reading a burned-in text label (not a flat level)
    in the corner of real scans, with the retina found label-free, is flagged on the corners."""
    images, codes, retina, overlay, inks = text_marked_real_scans(real_dev)
    box = (slice(0, 26), slice(0, 26))

    def centred(pixels: torch.Tensor) -> torch.Tensor:
        pixels = pixels[..., box[0], box[1]].flatten(-2)
        pixels = pixels - pixels.mean(dim=-1, keepdim=True)
        return pixels / pixels.norm(dim=-1, keepdim=True).clamp(min=1e-6)

    def reads_the_label(batch: torch.Tensor) -> torch.Tensor:
        """The label whose ink correlates best with the corner's pixels."""
        correlation = centred(batch[:, 0]) @ centred(inks).T
        return torch.softmax(20 * correlation, dim=1)

    predicted = reads_the_label(images).argmax(dim=1)
    assert (predicted == codes).float().mean() >= 0.9
    result = region_swap(
        reads_the_label,
        images,
        edge_regions(128, 128)["corners"].expand_as(retina),
        retina,
        choose_donors(predicted, 3, same_class=False),
        choose_donors(predicted, 3, same_class=True),
        overlay=overlay,
    )
    assert result.flagged and result.flip_to_donor.mean >= 0.8


@pytest.mark.parametrize("kind", OVERLAY_KINDS)
def test_a_scan_too_small_for_four_distinct_marks_is_refused(kind):
    side = smallest_scan(kind)
    inks = [draw_overlay(np.zeros((side, side), np.uint8), kind, c) for c in range(4)]
    if kind != "square":
        assert all((a != b).any() for i, a in enumerate(inks) for b in inks[i + 1 :])
    with pytest.raises(ValueError, match=f"at least {side} px"):
        draw_overlay(np.zeros((side - 1, 300), np.uint8), kind, 0)


def test_synth_refuses_marks_its_scans_are_too_small_for(tmp_path):
    with pytest.raises(OctlensError, match=r"^shortcut text: needs scans of at least 222 px"):
        synthesize(tmp_path / "s", 4, size=(62, 64), workers=1, shortcut="text")
    with pytest.raises(OctlensError, match=r"^shortcut_place 'middle'"):
        synthesize(tmp_path / "s", 4, size=(62, 64), workers=1, shortcut_place="middle")
    assert not (tmp_path / "s").exists()


def test_overlays_are_found_in_float_scans_as_in_uint8_ones(real_dev):
    marked = dev_scans(real_dev, 40)[0].copy()
    draw_overlay(marked, "text", 1, "top-left")
    found = burned_in_overlays(marked)
    assert found.any()
    assert (burned_in_overlays(marked / 255.0) == found).all()


def test_the_audit_covers_every_pixel_a_mark_touches_at_the_model_size(tmp_path, real_dev):
    """Shrunk with a nearest-neighbour resize, a mark's thin strokes fall between the samples
    and stay behind in a swap; the audit's overlay mask covers every pixel they touch."""
    from octlens.audit.batch import _covered

    wide = np.zeros((496, 1536), np.uint8)
    ink = draw_overlay(wide, "text", 1, "left")
    at_128 = np.asarray(Image.fromarray(wide).resize((128, 128), Image.Resampling.BOX)) > 0
    assert (_covered(ink, 128) >= at_128).all()
