"""The counterfactual region tests, checked by hand on models whose rule we wrote ourselves."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from octlens.audit.counterfactual import (
    choose_donors,
    cohen_kappa,
    large_effect,
    moved,
    reacquired,
    region_only,
    region_swap,
    swap_mask,
    with_whole_marks,
)
from octlens.audit.evidence import (
    OCT_WIDTHS,
    ScansUnderTest,
    StoredScans,
    counterfactual_evidence,
)
from octlens.data.regions import edge_regions, region_masks

SIZE, CLASSES = 40, 4
LEVELS = torch.tensor([0.0, 1.0, 2.0, 3.0])


def scans(per_class: int = 6) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Images whose top-left corner AND retina band both code the class; the retina is rows
    15-25 (never in a corner square, which is 8 px here)."""
    labels = torch.arange(CLASSES).repeat_interleave(per_class)
    images = torch.randn(len(labels), 1, SIZE, SIZE) * 0.01
    images[:, 0, :4, :4] += LEVELS[labels, None, None]
    images[:, 0, 15:25, :] += LEVELS[labels, None, None]
    retina = torch.zeros(len(labels), SIZE, SIZE, dtype=torch.bool)
    retina[:, 15:25, :] = True
    return images, labels, retina


def reads(rows: slice, cols: slice):
    """A model that predicts the class whose level is nearest the mean of one window."""

    def predict(images: torch.Tensor) -> torch.Tensor:
        value = images[:, 0, rows, cols].mean(dim=(1, 2))
        return torch.softmax(-10 * (value[:, None] - LEVELS[None]).abs(), dim=1)

    return predict


corner_reader = reads(slice(0, 4), slice(0, 4))
retina_reader = reads(slice(15, 25), slice(0, SIZE))


def swap(predict, region: torch.Tensor):
    images, _, retina = scans()
    predicted = predict(images).argmax(dim=1)
    return region_swap(
        predict,
        images,
        region.expand_as(retina),
        retina,
        choose_donors(predicted, 3, same_class=False),
        choose_donors(predicted, 3, same_class=True),
    )


def test_a_corner_reader_follows_corner_swaps_and_not_the_controls():
    result = swap(corner_reader, edge_regions(SIZE, SIZE)["corners"])
    assert result.flip_to_donor.mean == 1.0  # every swapped corner takes the donor's class
    assert result.random_place.mean == 0.0  # the same pixels mid-scan change nothing
    assert result.same_class.mean == 0.0  # a same-class corner is no news
    assert result.effect.mean == 1.0 and result.effect.low == 1.0
    assert result.flagged
    assert result.probability_change < -0.5  # its original class loses its probability
    assert result.n_scans == 24


def test_a_retina_reader_ignores_corner_and_background_swaps():
    for region in (edge_regions(SIZE, SIZE)["corners"], edge_regions(SIZE, SIZE)["border"]):
        result = swap(retina_reader, region)
        assert result.flip_to_donor.mean == 0.0
        assert not result.flagged


def test_swaps_never_move_retina_pixels():
    images, _, retina = scans()
    donors = torch.roll(torch.arange(len(images)), 7)
    everything = torch.ones_like(retina)
    mask = swap_mask(everything, retina, donors)
    assert not (mask & retina).any() and not (mask & retina[donors]).any()
    # a retina reader is untouched by swapping the whole background
    assert swap(retina_reader, torch.ones(SIZE, SIZE, dtype=torch.bool)).flip_to_donor.mean == 0


def test_the_random_place_control_is_retina_free_and_outside_the_region():
    """A model that reads the whole retina band: corner swaps and their controls never touch
    it, so nothing flips; a model reading mid-background would be flipped only by controls."""
    mid_background = reads(slice(28, 34), slice(16, 24))  # below the retina, mid-scan
    images, _, retina = scans()
    images[:, 0, 28:34, :] += LEVELS[torch.arange(CLASSES).repeat_interleave(6), None, None]
    predicted = mid_background(images).argmax(dim=1)
    corners = edge_regions(SIZE, SIZE)["corners"].expand_as(retina)
    result = region_swap(
        mid_background,
        images,
        corners,
        retina,
        choose_donors(predicted, 3, same_class=False),
        choose_donors(predicted, 3, same_class=True),
    )
    assert result.flip_to_donor.mean == 0.0  # the corners do not matter to it
    assert result.random_place.mean > 0.0  # the moved background does
    assert not result.flagged


def test_random_place_keeps_the_area_and_leaves_the_corners():
    corners = edge_regions(SIZE, SIZE)["corners"].expand(5, SIZE, SIZE)
    shifted = moved(corners, torch.Generator().manual_seed(0))
    assert (shifted.flatten(1).sum(1) == corners.flatten(1).sum(1)).all()
    assert not (shifted & corners).any()


def test_a_half_reader_gives_the_effect_its_share():
    """Reads the corner for classes 0-1 and the retina otherwise: hand-count the flips."""

    def predict(images):
        by_corner, by_retina = corner_reader(images), retina_reader(images)
        use_corner = by_retina.argmax(dim=1) < 2
        return torch.where(use_corner[:, None], by_corner, by_retina)

    images, _, retina = scans(per_class=10)
    predicted = predict(images).argmax(dim=1)
    donors = choose_donors(predicted, 4, same_class=False, seed=3)
    result = region_swap(
        predict,
        images,
        edge_regions(SIZE, SIZE)["corners"].expand_as(retina),
        retina,
        donors,
        choose_donors(predicted, 4, same_class=True),
    )
    expected = (predicted[:, None] < 2).float() * torch.ones(1, 4)  # class 0/1 scans flip always
    assert result.flip_to_donor.mean == pytest.approx(expected.mean().item())
    assert result.flagged and result.flip_to_donor.low < 0.5 < result.flip_to_donor.high


def test_no_donor_of_another_class_means_no_result():
    images, _, retina = scans()
    constant = lambda x: torch.tensor([[0.7, 0.1, 0.1, 0.1]]).expand(len(x), 4)  # noqa: E731
    predicted = constant(images).argmax(dim=1)
    donors = choose_donors(predicted, 2, same_class=False)
    assert (donors == -1).all()
    corners = edge_regions(SIZE, SIZE)["corners"].expand_as(retina)
    same = choose_donors(predicted, 2, same_class=True)
    assert region_swap(constant, images, corners, retina, donors, same) is None


def test_region_only_accuracy_and_agreement():
    images, labels, retina = scans()
    fill = torch.zeros_like(retina)
    retina_result = region_only(retina_reader, images, labels, retina, fill)
    assert retina_result["original"].accuracy.mean == 1.0
    assert retina_result["retina_only"].accuracy.mean == 1.0
    assert retina_result["retina_only"].kappa.mean == 1.0
    assert retina_result["background_only"].kappa.mean < 0.2
    corner_result = region_only(corner_reader, images, labels, retina, fill)
    assert corner_result["background_only"].accuracy.mean == 1.0
    assert corner_result["retina_only"].kappa.mean < 0.2


def test_cohen_kappa_by_hand():
    first = torch.tensor([0, 0, 1, 1])
    assert cohen_kappa(first, first, 2).item() == 1.0
    # observed 0.5, expected 0.5 * 0.5 + 0.5 * 0.5 = 0.5 -> 0
    assert cohen_kappa(first, torch.tensor([0, 1, 0, 1]), 2).item() == 0.0
    # constant and equal: total agreement
    assert cohen_kappa(torch.zeros(4).long(), torch.zeros(4).long(), 2).item() == 1.0


def evidence_of(predict):
    """The whole counterfactual evidence, from its narrow inputs alone (no run, no audit)."""
    images, labels, retina = scans()
    fill, overlay = torch.zeros_like(retina), torch.zeros_like(retina)
    stored = images[:, 0].numpy()  # the scans "as stored": SIZE x SIZE, the model's input size
    under_test = ScansUnderTest(
        predict=predict,
        images=images,
        labels=labels,
        predictions=predict(images).argmax(dim=1),
        retina=retina,
        fill=fill,
        overlay=overlay,
        regions=region_masks(retina, fill),
    )
    as_stored = StoredScans(
        widths=frozenset({SIZE}),
        chunks=lambda: (list(stored[i : i + 5]) for i in range(0, len(stored), 5)),
        to_input=lambda pixels: torch.nn.functional.interpolate(
            torch.from_numpy(np.ascontiguousarray(pixels))[None, None], size=(SIZE, SIZE)
        )[0],
    )
    return counterfactual_evidence(under_test, as_stored, donors=3)


def test_the_evidence_flags_the_corners_of_a_corner_reader_and_nothing_of_a_retina_reader():
    corners = evidence_of(corner_reader)
    assert set(corners.flagged_regions()) == {"corners", "border"}
    # the whole background moves the corner too, but leaves no place for the random-place
    # control, so it supports and never flags
    assert corners.swaps["off_retina"].flip_to_donor.mean == 1.0
    assert corners.swaps["corners"].effect.mean == 1.0
    assert corners.donors_per_scan == 3 and corners.chance == 0.25
    assert corners.region_only["background_only"].accuracy.mean == 1.0
    retina = evidence_of(retina_reader)
    assert retina.flagged_regions() == {}
    assert all(swap.flip_to_donor.mean == 0 for swap in retina.swaps.values() if swap)
    assert retina.region_only["retina_only"].accuracy.mean == 1.0
    # the aspect test: every scan is 40 px wide, so each OCT width re-acquires all 24; cropping
    # or mirroring the sides keeps each row's level, so a reader of whole rows never changes
    assert set(retina.aspect) == {str(width) for width in OCT_WIDTHS}
    assert all(changed.mean == 0 for changed in retina.aspect.values())


def test_reacquired_crops_and_mirrors():
    pixels = np.arange(12).reshape(2, 6)
    assert reacquired(pixels, 4).tolist() == [[1, 2, 3, 4], [7, 8, 9, 10]]
    wide = reacquired(pixels, 10)
    assert wide.shape == (2, 10)
    assert wide[0].tolist() == [1, 0, 0, 1, 2, 3, 4, 5, 5, 4]
    assert reacquired(pixels, 30).shape == (2, 30)  # wider than twice: mirrored again


def test_explanation_clusters_find_a_corner_reading_minority():
    from octlens.audit.clusters import cluster_count, explanation_clusters, map_features

    generator = torch.Generator().manual_seed(0)
    maps = torch.rand(16, 32, 32, generator=generator) * 0.05
    maps[:12, 12:20, 12:20] += 1.0  # the majority looks at the middle
    maps[12:, :6, :6] += 1.0  # four scans look at the top-left corner
    features = map_features(maps)
    assert np.allclose(features.sum(axis=1), 1.0)
    groups = explanation_clusters(maps, torch.zeros(16, dtype=torch.long))
    assert [(predicted, sorted(members.tolist())) for predicted, members in groups] == [
        (0, list(range(12))),
        (0, [12, 13, 14, 15]),
    ]
    # one cluster per predicted class when there are too few scans to cut
    few = explanation_clusters(maps[:6], torch.tensor([0, 0, 0, 1, 1, 1]))
    assert [len(members) for _, members in few] == [3, 3]
    blocks = np.kron(np.eye(3), np.ones((4, 4))) - np.eye(12)  # three disconnected groups
    assert cluster_count(blocks, max_clusters=4) == 3


def test_a_swap_without_a_random_place_control_supports_but_never_flags():
    """Swapping the whole background leaves no 'elsewhere' for the control: reported, not
    flagged, however large the flip rate."""
    background_reader = reads(slice(28, 34), slice(16, 24))
    images, _, retina = scans()
    images[:, 0, 28:34, :] += LEVELS[torch.arange(CLASSES).repeat_interleave(6), None, None]
    predicted = background_reader(images).argmax(dim=1)
    result = region_swap(
        background_reader,
        images,
        torch.ones_like(retina),  # off the retina: everything the swap may touch
        retina,
        choose_donors(predicted, 3, same_class=False),
        choose_donors(predicted, 3, same_class=True),
    )
    assert result.flip_to_donor.mean == 1.0 and result.effect.low > 0.5
    assert result.random_place.mean == 0.0 and not result.flagged


def test_answers_that_tip_without_their_probability_moving_are_not_flagged():
    """A model with nearly uniform outputs whose argmax follows the corner: the swap flips its
    answers, but the probability of its answer barely moves. That is a tie tipping, reported
    with its effect, not a model reading the corner."""

    def tie_tipper(images: torch.Tensor) -> torch.Tensor:
        return 0.996 * 0.25 + 0.004 * corner_reader(images)  # rows still sum to 1

    tipped = swap(tie_tipper, edge_regions(SIZE, SIZE)["corners"])
    read = swap(corner_reader, edge_regions(SIZE, SIZE)["corners"])
    assert tipped.effect.mean == read.effect.mean == 1.0
    assert -0.01 < tipped.probability_change < 0 and not tipped.flagged
    assert read.flagged


def test_a_burned_in_overlay_moves_even_over_the_donors_retina():
    """Decided in issue 22: what the finder calls retina stays put, but a mark always moves:
    where scan i's mark lies over the donor's retina, the donor's pixels come with the swap."""
    _, _, retina = scans()
    donors = torch.roll(torch.arange(len(retina)), 7)
    corners = edge_regions(SIZE, SIZE)["corners"].expand_as(retina)
    overlay = torch.zeros_like(retina)
    overlay[:, 2:6, 2:6] = True  # a mark in the top-left corner of every scan
    retina = retina.clone()
    retina[donors[0], 2:6, 2:6] = True  # donor 0's retina runs under scan 0's mark
    without = swap_mask(corners, retina, donors)
    with_overlay = swap_mask(corners, retina, donors, overlay)
    assert not without[0, 2:6, 2:6].any()  # without the overlay mask the mark stays
    assert with_overlay[0, 2:6, 2:6].all()  # with it, it moves
    # elsewhere anatomy still stays put
    assert not (with_overlay & retina & ~overlay).any()
    assert not (with_overlay & retina[donors] & ~overlay & ~overlay[donors]).any()


def test_texture_for_region_only_is_never_drawn_from_an_overlay():
    images, labels, retina = scans()
    fill = torch.zeros_like(retina)
    overlay = torch.zeros_like(retina)
    overlay[:, :4, :4] = True  # the class-coded corner of every scan is a mark
    seen = []

    def records(batch: torch.Tensor) -> torch.Tensor:
        seen.append(batch.clone())
        return corner_reader(batch)

    region_only(records, images, labels, retina, fill, overlay=overlay)
    retina_only = seen[-1][:, 0]
    # off the retina everything is texture from background rows, none from the marks' levels
    assert retina_only[:, :4, :4].abs().max() < 0.5
    region_only(records, images, labels, retina, fill)
    assert seen[-1][:, 0, :4, 4:].abs().max() > 0.5  # without the overlay mask, they leak


def test_a_mark_that_touches_the_region_moves_whole():
    """A mark at the middle of an edge reaches past the border band: it is swapped whole."""
    region = torch.zeros(2, SIZE, SIZE, dtype=torch.bool)
    region[:, :, :5] = True  # a band along the left edge
    overlay = torch.zeros_like(region)
    overlay[0, 15:25, 2:12] = True  # half in the band, half out
    overlay[0, 30:34, 20:24] = True  # another mark, away from the band
    grown = with_whole_marks(region, overlay)
    assert grown[0, 15:25, 2:12].all() and not grown[0, 30:34, 20:24].any()
    assert (grown[1] == region[1]).all()


def test_a_model_a_foreign_mark_disturbs_is_flagged_on_its_changes():
    """Answers the retina's class while the corner agrees with it, and otherwise the lowest class
    that is neither: another class's corner never moves it to the donor's class, yet changes
    every answer. The flips stay within their controls; the changes do not."""

    def disturbed(images: torch.Tensor) -> torch.Tensor:
        by_retina = retina_reader(images)
        retina_class, corner_class = by_retina.argmax(dim=1), corner_reader(images).argmax(dim=1)
        taken = torch.nn.functional.one_hot(retina_class, CLASSES) | torch.nn.functional.one_hot(
            corner_class, CLASSES
        )
        neither = (taken == 0).float().argmax(dim=1)  # the first class free of both
        answer = torch.where(retina_class == corner_class, retina_class, neither)
        return 0.1 * by_retina + 0.9 * torch.nn.functional.one_hot(answer, CLASSES).float()

    result = swap(disturbed, edge_regions(SIZE, SIZE)["corners"])
    assert result.flip_to_donor.mean == 0.0 and not large_effect(result.effect)
    assert result.changed.mean == 1.0  # every foreign corner changes the answer
    assert result.same_class.mean == 0.0 and result.change_effect.mean == 1.0
    assert result.flagged and result.probability_change < -0.5
    # a reader of the retina alone changes nothing: no change effect either
    calm = swap(retina_reader, edge_regions(SIZE, SIZE)["corners"])
    assert calm.changed.mean == 0.0 and calm.change_effect.mean == 0.0 and not calm.flagged
