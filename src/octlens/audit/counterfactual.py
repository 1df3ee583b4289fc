"""Counterfactual region tests: change one region of a scan, keep everything else, and see what
the model does. They need no planted marks and no manifest, so they work on a user's own data.

Three tests, each a few forward passes per scan, all on the model's normalized input
(B, 1, S, S) with boolean region masks (B, S, S) at the same size:

**Region swap** (:func:`region_swap`). For each scan *i* and each of ``k`` donors *d* whose
predicted class differs from *i*'s, the pixels of a region (the corners, the border band, the
scanner's fill, or everything off the retina) that lie off the retina in *both* scans are copied
from *d* into *i*, so no anatomy moves, and so are the pixels of a burned-in overlay of either scan
in the region (:func:`octlens.data.retina.burned_in_overlays`: text, logos, scale bars, arrows, flat
patches), even where the other scan has retina, and a mark that touches the region moves whole
(:func:`with_whole_marks`). What the retina finder calls retina stays put: a steep or tilted retina
crossing a corner is anatomy, and swapping it would test the model on another patient's anatomy, not
on the corner. A mark is never anatomy: where it covers the retina the finder leaves it out of the
retina mask, and where it lies over the donor's retina the donor's retina comes with the swap, so
the mark always goes (the same-class control pastes such pixels too, from donors of the scan's own
class). With :math:`\\hat y` the model's prediction:

.. math::

    \\text{flip}_i = \\frac1k \\sum_d [\\hat y(\\text{swap}(x_i, x_d, R)) = \\hat y(x_d)]

is the *flip-to-donor* rate: the prediction moves to the donor's predicted class. Using the
donor's prediction rather than its label makes the test label-free, and it is what a shortcut
follows (on the planted test split the marks lie about the label). Two controls, per scan:

- *random place*: the same donor's pixels in the swap mask moved by a random offset of 2/5 to 3/5
  of the side in each direction (``torch.roll``, which takes the corners and the border band to
  the middle of the scan), kept only where it is off the retina in both scans and outside the
  tested region: as much foreign background (at most the same area) elsewhere, no anatomy. The
  off-retina region has no elsewhere, so its control is empty (no change) and only the
  same-class control applies to it;
- *same class*: the same swap from a donor the model puts in the scan's own class; its rate of
  *any* change of prediction is what swapping that region does when it carries no class.

**Region-only** (:func:`region_only`): the retina replaced by background texture (pixels drawn at
random from the off-retina pixels of the same row in all scans that are neither fill nor overlay),
and separately everything off the retina (overlays included) replaced by it. The accuracy of each
against the unchanged scans and against chance, and Cohen's kappa between the changed and the
original predictions (agreement beyond what the two prediction frequencies give by chance).

**Aspect** (:func:`reacquired`): a scan of width *W* presented as if acquired with *W'* A-scans at
the same spacing (a centre crop when narrower, mirrored sides when wider) before the model's
whole-scan resize, so the retina is squashed as in a scan of that width; the share of predictions
that change, per width. Mirroring repeats the anatomy (three times at 3x the width), so large
changes far from the scan's own width are expected of any model; neighbouring widths (512 and
768) are the informative comparison.

**Verdict** (:attr:`SwapResult.flagged`): a region is flagged when its swap's *effect*,
:math:`\\overline{\\text{flip}} - \\max(\\overline{\\text{flip}}_{\\text{random place}},
\\overline{\\text{changed}}_{\\text{same class}})`, is at least :data:`MIN_EFFECT` and the lower end
of its 95% bootstrap interval (scans resampled) is above zero, or its *change effect* is (the
same with any change of prediction in place of a flip to the donor's class, for the swap and the
random-place control alike), its random-place control exists, and the swap lowers the probability
of the predicted class by at least :data:`MIN_PROBABILITY_DROP` on average. The change effect
sees a model that uses a region's class-coded content without answering the class it codes
(one that reads a mark only to rule a class out, or that a mark disagreeing with the retina
throws to a third class): if the model uses nothing of the region's content that goes with the
class, a corner from another class's scan changes its answer no more often than one from a scan
of its own class. The last condition separates reading a region from
tipping at a tie: a model whose outputs are nearly uniform (a clean ViT-tiny at chance, in the
calibration) flips to the donor's class for 16% of border swaps more than the controls while the
probability of its answer moves by 0.004; models that read a planted mark lose 0.013 to 0.28 of
it. The off-retina region has none (there is no background outside it), so its swap is
reported as support but never flags on its own: a model whose outputs sit near a tie (a clean
ViT-tiny at chance) tips towards the donor when 70% of its input changes, with its confidence
moving by 0.01. Region-only and aspect results are
reported beside it, not flagged on their own: a retina-shaped hole still shows the retina's outline
(anatomy), and a squashed scan changes the lesions' shapes too.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict
from scipy import ndimage

from octlens.errors import OctlensError

#: Smallest effect (flip-to-donor rate above both controls) that flags a region.
MIN_EFFECT = 0.05
#: The least mean drop of the predicted class's probability a flagged swap must cause (see the
#: module's docstring; chosen after the calibration found a tie-tipping clean model at 0.004).
MIN_PROBABILITY_DROP = 0.01
#: Bootstrap resamples for every interval.
RESAMPLES = 2000

#: (B, 1, S, S) normalized images -> (B, K) class probabilities.
Predict = Callable[[torch.Tensor], torch.Tensor]


class _Record(BaseModel):
    """A result ``audit.json`` stores as it is: immutable, no field it does not know."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Interval(_Record):
    """A mean over scans and its 95% percentile-bootstrap interval."""

    mean: float
    low: float
    high: float

    def __str__(self) -> str:
        return f"{self.mean:.0%} [{self.low * 100:.0f}, {self.high * 100:.0f}]"

    def signed(self) -> str:
        """A difference of scores: ``+0.093 [+0.041, +0.140]``."""
        return f"{self.mean:+.3f} [{self.low:+.3f}, {self.high:+.3f}]"


class SwapResult(_Record):
    """One region's swap (:func:`region_swap`) and its controls; rates are means over the scans
    with a donor."""

    n_scans: int
    area: float  # mean share of the image swapped
    flip_to_donor: Interval
    random_place: Interval  # flip-to-donor rate when the donor pixels land at random places
    same_class: Interval  # rate of any change when the donor has the scan's predicted class
    effect: Interval  # flip_to_donor - max(random_place, same_class)
    probability_change: float  # mean change of the originally predicted class's probability
    flagged: bool
    # any change of prediction, and its effect: changed - max(changed when placed at random,
    # same_class) (None in audits stored before they were measured)
    changed: Interval | None = None
    change_effect: Interval | None = None


def large_effect(effect: Interval) -> bool:
    """Whether an effect flags: at least :data:`MIN_EFFECT`, its interval above zero."""
    return effect.mean >= MIN_EFFECT and effect.low > 0


def bootstrap(
    statistic: Callable[[torch.Tensor], torch.Tensor], n: int, seed: int = 0
) -> torch.Tensor:
    """``statistic(indices)`` for :data:`RESAMPLES` resamples of ``range(n)`` with replacement;
    ``statistic`` takes (R, n) indices and returns (R,) values."""
    generator = torch.Generator().manual_seed(seed)
    return statistic(torch.randint(n, (RESAMPLES, n), generator=generator))


def interval(values: torch.Tensor, seed: int = 0) -> Interval:
    """Mean of per-scan ``values`` (N,) with its bootstrap interval."""
    values = values.double().cpu()
    means = bootstrap(lambda rows: values[rows].mean(dim=1), len(values), seed)
    return percentile_interval(values.mean().item(), means)


def rate_interval(outcomes: torch.Tensor, z: float = 1.96) -> Interval:
    """The share of 1s among 0/1 ``outcomes`` (N,) with its 95% Wilson score interval: unlike a
    percentile bootstrap, which collapses to [0, 0] when no outcome is 1, it says how large a
    rate 0 of N leaves possible."""
    n = len(outcomes)
    rate = outcomes.double().mean().item()
    centre = (rate + z**2 / (2 * n)) / (1 + z**2 / n)
    half = z * math.sqrt(rate * (1 - rate) / n + z**2 / (4 * n**2)) / (1 + z**2 / n)
    return Interval(mean=rate, low=max(0.0, centre - half), high=min(1.0, centre + half))


def percentile_interval(mean: float, resampled: torch.Tensor) -> Interval:
    low, high = torch.quantile(resampled.double(), torch.tensor([0.025, 0.975], dtype=torch.double))
    return Interval(mean=mean, low=low.item(), high=high.item())


def choose_donors(
    predictions: torch.Tensor, k: int, same_class: bool, seed: int = 0
) -> torch.Tensor:
    """(N, k) donor indices: scans predicted in another class (or, with ``same_class``, in the
    same class, never the scan itself), drawn with replacement; -1 where no scan qualifies."""
    generator = torch.Generator().manual_seed(seed)
    predictions = predictions.cpu()
    n = len(predictions)
    donors = torch.full((n, k), -1, dtype=torch.long)
    for i in range(n):
        same = predictions == predictions[i]
        pool = torch.nonzero(same if same_class else ~same).flatten()
        pool = pool[pool != i]
        if len(pool):
            donors[i] = pool[torch.randint(len(pool), (k,), generator=generator)]
    return donors


def with_whole_marks(region: torch.Tensor, overlay: torch.Tensor) -> torch.Tensor:
    """(N, S, S) ``region`` grown by every burned-in mark (8-connected piece of ``overlay``) that
    touches it: a mark half inside the border band is swapped whole, not cut in two."""
    grown = region.clone()
    marks = overlay.cpu().numpy()
    inside = region.cpu().numpy()
    for i in range(len(marks)):
        if not marks[i].any():
            continue
        labels, _ = ndimage.label(marks[i], structure=np.ones((3, 3)))
        touching = np.unique(labels[inside[i] & marks[i]])
        whole = np.isin(labels, touching[touching > 0])
        grown[i] |= torch.from_numpy(whole).to(region.device)
    return grown


def swap_mask(
    region: torch.Tensor,
    retina: torch.Tensor,
    donors: torch.Tensor,
    overlay: torch.Tensor | None = None,
) -> torch.Tensor:
    """(N, S, S): the region of either scan, where neither scan has retina (no anatomy moves) or
    either scan has a burned-in ``overlay`` (a mark always moves)."""
    movable = ~retina & ~retina[donors]
    if overlay is not None:
        movable = movable | overlay | overlay[donors]
    return (region | region[donors]) & movable


def pasted(images: torch.Tensor, donors: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``images`` with the ``mask`` pixels of each scan taken from its donor."""
    return torch.where(mask[:, None], images[donors], images)


def moved(mask: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each (S, S) mask rolled by a random offset of 2/5 to 3/5 of the side on both axes: the
    same area, somewhere else (corner squares of 1/5 and the border band land mid-scan)."""
    height, width = mask.shape[-2:]
    shifted = torch.empty_like(mask)
    for i in range(len(mask)):
        dy = int(torch.randint(2 * height // 5, 3 * height // 5 + 1, (1,), generator=generator))
        dx = int(torch.randint(2 * width // 5, 3 * width // 5 + 1, (1,), generator=generator))
        shifted[i] = torch.roll(mask[i], (dy, dx), dims=(0, 1))
    return shifted


@dataclass
class _SwapOutcomes:
    """What each swap and its controls did, one (N,) tensor per donor column."""

    to_donor: list[torch.Tensor] = field(default_factory=list)  # answer became the donor's class
    placed_to_donor: list[torch.Tensor] = field(default_factory=list)  # ... placed at random
    same_changed: list[torch.Tensor] = field(default_factory=list)  # changed by a same-class donor
    changed: list[torch.Tensor] = field(default_factory=list)  # answer changed at all
    placed_changed: list[torch.Tensor] = field(default_factory=list)  # ... placed at random
    probability_deltas: list[torch.Tensor] = field(default_factory=list)
    areas: list[torch.Tensor] = field(default_factory=list)
    controlled: bool = False  # whether the random-place control moved any pixel at all


def _swap_outcomes(
    predict: Predict,
    images: torch.Tensor,
    region: torch.Tensor,
    retina: torch.Tensor,
    other_donors: torch.Tensor,
    same_donors: torch.Tensor,
    probabilities: torch.Tensor,
    generator: torch.Generator,
    overlay: torch.Tensor | None,
) -> _SwapOutcomes:
    """Three forward passes per donor column: the swap, the same pixels placed at random
    (outside both scans' region and retina), and the swap from a donor of the scan's own class."""
    predicted, device = probabilities.argmax(dim=1), images.device
    outcomes = _SwapOutcomes()
    for column in range(other_donors.shape[1]):
        donors = other_donors[:, column].to(device)
        mine = donors.clamp(min=0)
        mask = swap_mask(region, retina, mine, overlay)
        swapped = predict(pasted(images, mine, mask))
        outcomes.to_donor.append(swapped.argmax(dim=1) == predicted[mine])
        outcomes.changed.append(swapped.argmax(dim=1) != predicted)
        outcomes.probability_deltas.append(
            swapped.gather(1, predicted[:, None])[:, 0] - probabilities.max(dim=1).values
        )
        outcomes.areas.append(mask.flatten(1).float().mean(dim=1))
        outside = ~(region | region[mine]) & ~retina & ~retina[mine]
        elsewhere = moved(mask.cpu(), generator).to(device) & outside
        outcomes.controlled = outcomes.controlled or bool(elsewhere.any())
        placed_answer = predict(pasted(images, mine, elsewhere)).argmax(dim=1)
        outcomes.placed_to_donor.append(placed_answer == predicted[mine])
        outcomes.placed_changed.append(placed_answer != predicted)
        same = same_donors[:, column].to(device)
        alike = same.clamp(min=0)
        changed = predict(pasted(images, alike, swap_mask(region, retina, alike, overlay)))
        outcomes.same_changed.append(
            torch.where(same >= 0, changed.argmax(dim=1) != predicted, False)
        )
    return outcomes


def region_swap(
    predict: Predict,
    images: torch.Tensor,
    region: torch.Tensor,
    retina: torch.Tensor,
    other_donors: torch.Tensor,
    same_donors: torch.Tensor,
    seed: int = 0,
    probabilities: torch.Tensor | None = None,
    overlay: torch.Tensor | None = None,
) -> SwapResult | None:
    """Swap ``region`` from each scan's donors, with both controls; None when no scan has a donor
    of another predicted class (a model that predicts one class for everything).
    ``probabilities`` are the model's on the unchanged ``images``, when the caller has them;
    ``overlay`` (N, S, S) the burned-in marks, which move even over the other scan's retina."""
    if probabilities is None:
        probabilities = predict(images)
    if overlay is not None:
        region = with_whole_marks(region, overlay)
    generator = torch.Generator().manual_seed(seed)
    outcomes = _swap_outcomes(
        predict,
        images,
        region,
        retina,
        other_donors,
        same_donors,
        probabilities,
        generator,
        overlay,
    )
    valid = (other_donors[:, 0] >= 0).to(images.device)
    if not valid.any():
        return None

    def per_scan(values: list[torch.Tensor]) -> torch.Tensor:
        return torch.stack(values, dim=1).float().mean(dim=1)[valid].cpu().double()

    flip, random_place = per_scan(outcomes.to_donor), per_scan(outcomes.placed_to_donor)
    has_same = (same_donors[:, 0] >= 0).to(images.device)[valid].cpu()
    same_class = torch.where(has_same, per_scan(outcomes.same_changed), torch.nan)
    count = int(valid.sum())

    def effect_of(tested: torch.Tensor, control: torch.Tensor) -> Interval:
        """``tested`` beyond the larger of the ``control`` and same-class rates, per resample."""

        def effect(rows: torch.Tensor) -> torch.Tensor:
            same = same_class[rows].nanmean(dim=1).nan_to_num(0.0)
            return tested[rows].mean(dim=1) - torch.maximum(control[rows].mean(dim=1), same)

        return percentile_interval(
            effect(torch.arange(count)[None]).item(), bootstrap(effect, count, seed)
        )

    changed = per_scan(outcomes.changed)
    effect = effect_of(flip, random_place)
    change_effect = effect_of(changed, per_scan(outcomes.placed_changed))
    probability_change = per_scan(outcomes.probability_deltas).mean().item()
    return SwapResult(
        n_scans=count,
        flip_to_donor=interval(flip, seed),
        random_place=interval(random_place, seed),
        same_class=interval(same_class[has_same] if has_same.any() else torch.zeros(1), seed),
        effect=effect,
        probability_change=probability_change,
        area=per_scan(outcomes.areas).mean().item(),
        flagged=outcomes.controlled
        and (large_effect(effect) or large_effect(change_effect))
        and -probability_change >= MIN_PROBABILITY_DROP,
        changed=interval(changed, seed),
        change_effect=change_effect,
    )


def background_texture(
    images: torch.Tensor, background: torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    """(N, 1, S, S) of pixels drawn at random, row by row, from the ``background`` pixels of the
    same row in all scans: the background's texture and its change with depth (dark vitreous
    above, choroid below), with no place along the row and no class in it. A row with no
    background pixel in any scan draws from all background pixels."""
    rows = images[:, 0]
    everywhere = rows[background]
    if not len(everywhere):
        raise OctlensError(
            "the audited scans have no pixels off the retina and the fill to draw texture from"
        )
    texture = torch.empty_like(rows)
    n, _, width = rows.shape
    for row in range(rows.shape[1]):
        pool = rows[:, row][background[:, row]]
        pool = pool if len(pool) else everywhere
        picks = torch.randint(len(pool), (n, width), generator=generator).to(pool.device)
        texture[:, row] = pool[picks]
    return texture[:, None]


class OnlyResult(_Record):
    """The model on one kind of changed scan (:func:`region_only`)."""

    accuracy: Interval
    kappa: Interval  # agreement with the original predictions beyond chance


def region_only(
    predict: Predict,
    images: torch.Tensor,
    labels: torch.Tensor,
    retina: torch.Tensor,
    fill: torch.Tensor,
    seed: int = 0,
    overlay: torch.Tensor | None = None,
) -> dict[str, OnlyResult]:
    """``original``, ``background_only`` (retina replaced by texture) and ``retina_only``
    (everything else replaced), each with accuracy and kappa against the original predictions.
    Texture is never drawn from the ``fill`` or a burned-in ``overlay``: a mark's gray level
    scattered over the scan would still carry its class."""
    generator = torch.Generator().manual_seed(seed)
    background = ~retina & ~fill if overlay is None else ~retina & ~fill & ~overlay
    texture = background_texture(images, background, generator)
    inside = retina[:, None]
    variants = {
        "original": images,
        "background_only": torch.where(inside, texture, images),
        "retina_only": torch.where(inside, images, texture),
    }
    original = predict(images).argmax(dim=1).cpu()
    labels = labels.cpu()
    results = {}
    for name, variant in variants.items():
        predicted = original if name == "original" else predict(variant).argmax(dim=1).cpu()
        results[name] = OnlyResult(
            accuracy=interval((predicted == labels).double(), seed),
            kappa=kappa_interval(original, predicted, seed),
        )
    return results


def cohen_kappa(first: torch.Tensor, second: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Cohen's kappa between rows of predictions (R, n) -> (R,); 1.0 where both are constant
    and equal (total agreement), 0.0 where chance agreement is already total otherwise."""
    observed = (first == second).double().mean(dim=-1)
    one_hot = torch.nn.functional.one_hot
    p_first = one_hot(first, n_classes).double().mean(dim=-2)
    p_second = one_hot(second, n_classes).double().mean(dim=-2)
    expected = (p_first * p_second).sum(dim=-1)
    denominator = 1 - expected
    safe = torch.where(denominator > 1e-12, denominator, torch.ones_like(denominator))
    return torch.where(denominator > 1e-12, (observed - expected) / safe, (observed == 1).double())


def kappa_interval(first: torch.Tensor, second: torch.Tensor, seed: int = 0) -> Interval:
    n_classes = int(max(first.max(), second.max())) + 1
    mean = cohen_kappa(first[None], second[None], n_classes)[0].item()
    resampled = bootstrap(
        lambda rows: cohen_kappa(first[rows], second[rows], n_classes), len(first), seed
    )
    return percentile_interval(mean, resampled)


def reacquired(pixels: np.ndarray, width: int) -> np.ndarray:
    """An (H, W) scan as if acquired with ``width`` A-scans at the same spacing: the centre
    ``width`` columns when narrower, the sides mirrored outwards when wider."""
    current = pixels.shape[1]
    if width <= current:
        start = (current - width) // 2
        return pixels[:, start : start + width]
    extra = width - current
    left = extra // 2
    return np.pad(pixels, ((0, 0), (left, extra - left)), mode="symmetric")
