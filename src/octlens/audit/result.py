"""What an audit finds, typed: ``audit.json``, the terminal table, the HTML report and the demo
all read an :class:`AuditResult`, and both tables are drawn from one column spec
(:data:`COLUMNS`, :func:`table_rows`), so they cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

from pydantic import Field, model_validator

from octlens.audit.counterfactual import (
    MIN_PROBABILITY_DROP,
    Interval,
    OnlyResult,
    SwapResult,
    large_effect,
)
from octlens.audit.priors import PRIORS, RANDOM
from octlens.audit.scores import BEYOND_RETINA, LOCALIZATION, Score, direction_mark
from octlens.data.regions import Region
from octlens.files import Record

#: Mean of each metric over a group of scans (None: no scan of the group has it, e.g. the
#: pointing game on NORMAL scans).
Scores = dict[str, float | None]


class SanitySummary(Record):
    """The cascading-randomization check of one method (median over the checked scans)."""

    passed: bool
    stages: list[str]
    spearman_median: list[float]
    ssim_median: list[float]


class WorstScan(Record):
    scan: str
    off_retina: float


class MethodSummary(Record):
    """One method's audit: ``scores[group][metric]`` for the groups ``all``, each class and, on
    data with planted marks, ``marked`` and ``clean``; ``faithfulness``, the scores of
    :data:`~octlens.audit.scores.PERTURBATION` over the faithfulness scans with their 95%
    bootstrap intervals (empty in audits written before they were sampled)."""

    scores: dict[str, Scores]
    sanity: SanitySummary
    worst_off_retina: list[WorstScan]
    faithfulness: dict[str, Interval] = Field(default_factory=dict)


class AccuracySummary(Record):
    """Accuracy on the audited scans, and, on data with planted marks, on clean and marked ones."""

    all: float
    clean: float | None = None
    marked: float | None = None
    n_clean: int | None = None
    n_marked: int | None = None
    follows_mark: float | None = None
    follows_by_chance: float | None = None  # (1 - clean) / (K - 1): clean errors on one class
    clean_minus_marked: float | None = None
    # with its 95% bootstrap interval, and the mark's class answered beyond chance: the flag
    # rule's two differences (octlens.audit.shortcut.mark_effects)
    clean_minus_marked_interval: Interval | None = None
    follow_excess: Interval | None = None


#: How the verdict names each swapped region.
REGION_WORDS: dict[str, str] = {
    Region.CORNERS: "corner content",
    Region.BORDER: "border-band content",
    Region.FILL: "scanner-fill content",
    Region.OFF_RETINA: "off-retina background",
}


class CounterfactualSummary(Record):
    """The counterfactual tests (:mod:`octlens.audit.counterfactual`): region swaps per region
    (None when the model predicts one class for every scan), region-only accuracy, and the share
    of predictions that change when a scan is presented at another width."""

    donors_per_scan: int
    chance: float  # accuracy of always answering the most frequent class
    swaps: dict[str, SwapResult | None]
    region_only: dict[str, OnlyResult]
    aspect: dict[str, Interval]

    def flagged_regions(self) -> dict[str, str]:
        """Each flagged region and the sentence that says how large its effect is."""
        return {
            region: swap_sentence(region, swap)
            for region, swap in self.swaps.items()
            if swap is not None and swap.flagged
        }

    def context_lines(self) -> list[str]:
        """Region-only and aspect results, which the verdict reports but does not flag on."""
        only = self.region_only
        lines = [
            f"retina only: accuracy {only['retina_only'].accuracy} "
            f"(unchanged scans {only['original'].accuracy.mean:.0%}); background only: "
            f"{only['background_only'].accuracy} (chance {self.chance:.0%}), agreement with "
            f"the unchanged predictions kappa {only['background_only'].kappa.mean:.2f}"
        ]
        if self.aspect:
            lines.append(
                "presented at another width: "
                + ", ".join(f"{width} px {share}" for width, share in self.aspect.items())
                + " of predictions change"
            )
        return lines


#: The columns of the region-swap table, in the terminal and in the report.
SWAP_HEADINGS = (
    "region",
    "area",
    "flip to donor",
    "random places",
    "same class",
    "effect",
    "any change (effect)",
    "p(predicted) change",
)


def swap_cells(swap: SwapResult) -> tuple[str, ...]:
    """One region's row of the swap table after its name, in :data:`SWAP_HEADINGS` order."""
    return (
        f"{swap.area:.2f}",
        str(swap.flip_to_donor),
        f"{swap.random_place.mean:.0%}",
        f"{swap.same_class.mean:.0%}",
        str(swap.effect),
        "-" if swap.changed is None else f"{swap.changed.mean:.0%} ({swap.change_effect})",
        f"{swap.probability_change:+.2f}",
    )


def swap_sentence(region: str, swap: SwapResult) -> str:
    """What the swap does: the flips to the donor's class, or, where those stay within their
    controls but other changes do not, the changes."""
    words = REGION_WORDS.get(region, region)
    if swap.changed is None or swap.change_effect is None or large_effect(swap.effect):
        return (
            f"{words} moves {swap.flip_to_donor} of predictions to the "
            f"donor's class (controls: random places {swap.random_place.mean:.0%}, same class "
            f"{swap.same_class.mean:.0%}; effect {swap.effect}, n={swap.n_scans})"
        )
    return (
        f"{words} from another class's scan changes {swap.changed} of predictions, "
        f"{swap.flip_to_donor.mean:.0%} to the donor's class (controls: same class "
        f"{swap.same_class.mean:.0%}; effect {swap.change_effect}, n={swap.n_scans})"
    )


#: Fewer scans with a lesion predicted as their class than this credit no method: a bootstrap
#: over a handful of scans has no width.
MIN_CREDITED_SCANS = 10


class LocalizationSummary(Record):
    """The maps against the data's lesion masks, beside maps that never looked at the model
    (random maps and the retina priors of :mod:`octlens.audit.priors`).

    Groups of scans: ``all`` (every annotated scan with a lesion) and ``lesion_predicted`` (those
    the model predicts as their own class, the lesion's, so the maps explain that class). A
    method is credited with finding lesions on a score where it beats the stronger prior there:
    ``beyond_prior`` holds the method minus that prior, paired over the ``lesion_predicted``
    scans, with its 95% bootstrap interval; credited where the interval is above 0.
    """

    min_scans: int = MIN_CREDITED_SCANS  # fewer scans predicted as their class credit none
    n_annotated: int  # scans with a lesion mask, empty or not
    n_with_lesion: int
    n_lesion_predicted: int
    references: dict[str, dict[str, Scores]]  # reference map -> group -> score -> mean
    stronger_prior: dict[str, str]  # score -> the prior with the higher mean
    beyond_prior: dict[str, dict[str, Interval]]  # method -> score -> method minus the prior

    def credited(self, method: str) -> list[str]:
        """The scores on which ``method`` finds lesions beyond what the retina alone tells;
        none on fewer than ``min_scans`` scans."""
        if self.n_lesion_predicted < self.min_scans:
            return []
        gaps = self.beyond_prior.get(method, {})
        return [score for score in BEYOND_RETINA if score in gaps and gaps[score].low > 0]

    def verdict(self, methods: dict[str, MethodSummary], best: str | None) -> str:
        """Whether the best method (else the first, said to fail the sanity check if it does)
        finds lesions beyond the retina, in words, and which sanity-passing methods do where it
        does not or is not to be trusted."""
        if not self.n_lesion_predicted:
            return (
                f"lesions: none of the {self.n_with_lesion} annotated scans with a lesion is "
                "predicted as its class, so no map is credited with finding lesions"
            )
        scored = [method for method in methods if self.beyond_prior.get(method)]
        if not scored:
            return (
                "lesions: no localization score is defined on the scans predicted as their class "
                "(do their lesions lie outside the retina found?), so no map is credited"
            )
        name = best if best in scored else scored[0]
        gaps = self.beyond_prior[name]
        shown_scores = [score for score in BEYOND_RETINA if score in gaps]
        priors = {self.stronger_prior[score] for score in shown_scores}
        shown = ", ".join(
            f"{SCORE_WORDS[score]} {gaps[score].signed()}"
            + ("" if len(priors) == 1 else f" against the {self.stronger_prior[score]}")
            for score in shown_scores
        )
        if len(priors) == 1:
            shown = f"against the {priors.pop()}: {shown}"
        if self.n_lesion_predicted < self.min_scans:
            return (
                f"lesions ({self.n_lesion_predicted} scans with a lesion, predicted as its "
                f"class): too few to credit a method ({self.min_scans} needed); {name}: {shown}"
            )
        credited = self.credited(name)
        subject = name if methods[name].sanity.passed else f"{name}, which fails the sanity check,"
        if credited:
            found = f"{subject} finds lesions beyond the retina on " + ", ".join(
                SCORE_WORDS[score] for score in credited
            )
        else:
            found = f"{subject} is not shown to find lesions beyond what the retina alone tells"
        others = [
            other
            for other, summary in methods.items()
            if other != name and summary.sanity.passed and self.credited(other)
        ]
        if not credited or not methods[name].sanity.passed:
            found += "; " + (
                f"{', '.join(others)} do{'es' if len(others) == 1 else ''}"
                if others
                else "no sanity-passing method does"
            )
        return (
            f"lesions ({self.n_lesion_predicted} scans with a lesion, predicted as its class): "
            f"{found} ({shown})"
        )


#: How the verdict names each localization score.
SCORE_WORDS: dict[str, str] = {
    Score.POINTING_GAME: "pointing game",
    Score.ENERGY_IN_LESION: "energy in lesion",
    Score.PIXEL_AUROC: "pixel AUROC",
    Score.WITHIN_RETINA_AUROC: "within-retina AUROC",
}


class ClusterSummary(Record):
    """A group of scans the model explains alike (spectral clustering of the maps)."""

    predicted: str
    size: int
    shares: dict[str, float]  # mean attention share per region
    examples: list[str]


class Curves(Record):
    deletion_auc: float
    insertion_auc: float


class FaithfulnessProtocol(Record):
    """How deletion, insertion and the average drop were measured, and on which scans: ``scans``
    lists them when they are a sample of the audited scans (None: every one)."""

    steps: int
    baseline: str
    insertion_start: str
    scans: list[str] | None = None

    def sample_note(self, n_scans: int) -> str:
        """``deletion, insertion and average drop on 200 of the 1000, ...`` for a sample, ``""``
        when every scan was used."""
        if self.scans is None:
            return ""
        return (
            f"deletion, insertion and average drop on {len(self.scans)} of the {n_scans}, "
            "drawn in proportion to the predicted classes"
        )


class AuditResult(Record):
    """Everything ``octlens audit`` measured on one run and one split (``audit.json``)."""

    what: ClassVar[str] = "an audit"
    remedy: ClassVar[str] = "run 'octlens audit' again"

    run: str
    model: str
    data: str
    split: str
    data_fingerprint: str
    precision: str
    n_scans: int
    unreadable: list[str]
    retina_masks: str  # "masks" (the dataset's retina/ folder) or "estimated"
    accuracy: AccuracySummary
    area_share: dict[str, float]  # what an even map would put in each region
    faithfulness_protocol: FaithfulnessProtocol
    random_baseline: Curves
    methods: dict[str, MethodSummary]
    best_method: str | None
    localization: LocalizationSummary | None = None  # None without lesion masks
    layer: str | None = None  # the layer the CAMs explained (None: the model's last stage)
    counterfactual: CounterfactualSummary
    attention_notes: list[str]  # what the maps say about the regions: support, not a flag
    clusters_method: str | None
    clusters: list[ClusterSummary]
    flagged: bool
    flag_reasons: list[str]

    @model_validator(mode="after")
    def _sample_within_the_audit(self) -> AuditResult:
        """A faithfulness sample of more scans than were audited is a file edited by hand."""
        scans = self.faithfulness_protocol.scans
        if scans is not None and len(scans) > self.n_scans:
            raise ValueError(f"{len(scans)} faithfulness scans of {self.n_scans} audited")
        return self

    def verdict_lines(self) -> list[str]:
        """The verdict in words: counterfactual evidence first, then what the maps and, on data
        with planted marks, the manifest say."""
        lines = []
        if self.flagged:
            lines += [f"FLAGGED: {reason}" for reason in self.flag_reasons]
        else:
            reason = unflagged_reason(self.counterfactual.swaps)
            lines.append(f"not flagged: {reason} (rule: octlens.audit.shortcut)")
        lines += self.counterfactual.context_lines()
        lines += [f"attention: {note}" for note in self.attention_notes]
        if self.localization is not None:
            lines.append(self.localization.verdict(self.methods, self.best_method))
        accuracy = self.accuracy
        if accuracy.n_marked is not None:
            lines.append(
                f"planted marks: clean scans {_number(accuracy.clean)} (n={accuracy.n_clean}), "
                f"scans with a misleading mark {_number(accuracy.marked)} "
                f"(n={accuracy.n_marked}{_bounds(accuracy.clean_minus_marked_interval)}); "
                f"follows the mark {_number(accuracy.follows_mark)} "
                f"(by chance {_number(accuracy.follows_by_chance)}"
                f"{_bounds(accuracy.follow_excess, 'excess')})"
            )
        return lines


def unflagged_reason(swaps: dict[str, SwapResult | None]) -> str:
    """Why no swap flags, in words, with the swap that came closest.

    A swap whose effect clears the margin can still not flag: the off-retina swap only supports
    (no place is left for its random-place control), and answers that flip while their
    probability barely moves are a tie tipping, not a model reading the region (see
    :mod:`octlens.audit.counterfactual`). The line says which, rather than that nothing moved.
    """
    moved = {region: swap for region, swap in swaps.items() if swap is not None}
    if not moved:
        return "the model gives every scan the same class, so no swap can move it"
    region, swap = max(moved.items(), key=lambda item: item[1].effect.mean)
    sentence = swap_sentence(region, swap)
    beyond = large_effect(swap.effect) or (
        swap.change_effect is not None and large_effect(swap.change_effect)
    )
    if not beyond:
        return f"no region swap moves predictions beyond its controls (largest: {sentence})"
    if region == Region.OFF_RETINA:
        why = "the off-retina swap supports a flag but never makes one alone"
    elif -swap.probability_change >= MIN_PROBABILITY_DROP:
        why = "its random-place control found no place to go off the retina, so it cannot flag"
    else:
        why = (
            f"the probability of the answers fell by {-swap.probability_change:.3f} on average, "
            f"under the {MIN_PROBABILITY_DROP} a flag needs: answers tipping at a tie in a model "
            "with nearly uniform outputs, not a model reading the region"
        )
    return f"{sentence}; but {why}"


@dataclass(frozen=True)
class Column:
    """One column of the audit table: its short and long heading, the score it shows, and
    what the reference row (random maps, or the region's area) holds in it."""

    short: str
    long: str
    score: str  # a Score, or a Region for an attention share
    reference: Callable[[AuditResult], float | None] = lambda result: None

    def heading(self, long: bool = False, separator: str = " ") -> str:
        """The heading with the arrow of the score's better direction (``deletion ↓``; a
        terminal table puts the arrow on a line of its own, ``separator="\\n"``, to stay narrow)."""
        return f"{self.long if long else self.short}{separator}{direction_mark(self.score)}"


COLUMNS = (
    Column(
        "deletion",
        "deletion AUC",
        Score.DELETION_AUC,
        lambda result: result.random_baseline.deletion_auc,
    ),
    Column(
        "insertion",
        "insertion AUC",
        Score.INSERTION_AUC,
        lambda result: result.random_baseline.insertion_auc,
    ),
    Column("avg drop", "average drop", Score.AVERAGE_DROP),
    Column("pointing", "pointing game", Score.POINTING_GAME),
    Column("energy in lesion", "energy in lesion", Score.ENERGY_IN_LESION),
    Column("pixel AUROC", "pixel AUROC", Score.PIXEL_AUROC),
    Column("in-retina AUROC", "within-retina AUROC", Score.WITHIN_RETINA_AUROC),
    Column(
        "off-retina",
        "off-retina share",
        Region.OFF_RETINA,
        lambda result: result.area_share[Region.OFF_RETINA],
    ),
    Column(
        Region.CORNERS,
        "corner share",
        Region.CORNERS,
        lambda result: result.area_share[Region.CORNERS],
    ),
)
REFERENCE_ROW = "random maps / area"


@dataclass(frozen=True)
class Row:
    """A row of the audit table: a method (or the reference row), one value per column."""

    method: str
    values: tuple[float | None, ...]
    best: bool = False
    sanity: bool | None = None  # None for a reference row


def table_rows(result: AuditResult) -> list[Row]:
    """The methods' rows, then the reference rows (random maps, and the retina priors where
    there are lesion masks), in :data:`COLUMNS` order."""
    references = result.localization.references if result.localization else {}

    def reference(name: str, column: Column) -> float | None:
        if column.score in LOCALIZATION:
            return references.get(name, {}).get("all", {}).get(column.score)
        return column.reference(result) if name == RANDOM else None

    rows = [
        Row(
            method=name,
            values=tuple(summary.scores["all"].get(column.score) for column in COLUMNS),
            best=name == result.best_method,
            sanity=summary.sanity.passed,
        )
        for name, summary in result.methods.items()
    ]
    rows.append(Row(REFERENCE_ROW, tuple(reference(RANDOM, column) for column in COLUMNS)))
    rows += [
        Row(prior, tuple(reference(prior, column) for column in COLUMNS))
        for prior in PRIORS
        if prior in references
    ]
    return rows


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _bounds(value: Interval | None, name: str = "gap") -> str:
    """``, gap 0.120 [-0.020, 0.250]``; nothing for a result stored before intervals were."""
    if value is None:
        return ""
    return f", {name} {value.mean:.3f} [{value.low:.3f}, {value.high:.3f}]"
