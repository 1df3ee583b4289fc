"""What an audit finds, typed: ``audit.json``, the terminal table, the HTML report and the demo
all read an :class:`AuditResult`, and both tables are drawn from one column spec
(:data:`COLUMNS`, :func:`table_rows`), so they cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from octlens.errors import OctlensError
from octlens.files import read_json, write_json

#: Mean of each metric over a group of scans (None: no scan of the group has it, e.g. the
#: pointing game on NORMAL scans).
Scores = dict[str, float | None]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class SanitySummary(_Strict):
    """The cascading-randomization check of one method (median over the checked scans)."""

    passed: bool
    stages: list[str]
    spearman_median: list[float]
    ssim_median: list[float]


class WorstScan(_Strict):
    scan: str
    off_retina: float


class MethodSummary(_Strict):
    """One method's audit: ``scores[group][metric]`` for the groups ``all``, each class and, on
    data with planted marks, ``marked`` and ``clean``."""

    scores: dict[str, Scores]
    sanity: SanitySummary
    worst_off_retina: list[WorstScan]


class AccuracySummary(_Strict):
    """Accuracy on the audited scans, and, on data with planted marks, on clean and marked ones."""

    all: float
    clean: float | None = None
    marked: float | None = None
    n_clean: int | None = None
    n_marked: int | None = None
    follows_mark: float | None = None
    clean_minus_marked: float | None = None


class Curves(_Strict):
    deletion_auc: float
    insertion_auc: float


class FaithfulnessProtocol(_Strict):
    steps: int
    baseline: str
    insertion_start: str


class AuditResult(_Strict):
    """Everything ``octlens audit`` measured on one run and one split."""

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
    flagged: bool
    flag_reasons: list[str]

    def save(self, path: Path) -> None:
        write_json(path, self.model_dump(mode="json"))

    @classmethod
    def load(cls, path: Path) -> AuditResult:
        """Read ``audit.json``; a truncated, edited or older file is a one-line error."""
        try:
            return cls.model_validate(read_json(path))
        except ValidationError as error:
            first = error.errors()[0]
            where = ".".join(map(str, first["loc"]))
            raise OctlensError(
                f"{path}: not an audit this octlens can read ({where}: {first['msg']}); "
                "run 'octlens audit' again"
            ) from None

    def verdict_lines(self) -> list[str]:
        """The verdict in words: accuracy with and without planted marks, and the flag."""
        lines = []
        accuracy = self.accuracy
        if accuracy.n_marked is not None:
            lines.append(
                f"accuracy: clean scans {_number(accuracy.clean)} (n={accuracy.n_clean}), "
                f"scans with a misleading mark {_number(accuracy.marked)} "
                f"(n={accuracy.n_marked}); follows the mark {_number(accuracy.follows_mark)}"
            )
        if self.flagged:
            lines += [f"FLAGGED: {reason}" for reason in self.flag_reasons]
        else:
            lines.append("not flagged: no sign of a shortcut (rule: octlens.audit.shortcut)")
        return lines


@dataclass(frozen=True)
class Column:
    """One column of the audit table: its short and long heading, the metric it shows, and
    what the reference row (random maps, or the region's area) holds in it."""

    short: str
    long: str
    metric: str
    reference: Callable[[AuditResult], float | None] = lambda result: None


COLUMNS = (
    Column(
        "deletion",
        "deletion AUC",
        "deletion_auc",
        lambda result: result.random_baseline.deletion_auc,
    ),
    Column(
        "insertion",
        "insertion AUC",
        "insertion_auc",
        lambda result: result.random_baseline.insertion_auc,
    ),
    Column("avg drop", "average drop", "average_drop"),
    Column("pointing", "pointing game", "pointing_game"),
    Column(
        "energy in lesion",
        "energy in lesion",
        "energy_in_lesion",
        lambda result: result.area_share.get("lesion"),
    ),
    Column("pixel AUROC", "pixel AUROC", "pixel_auroc"),
    Column(
        "off-retina",
        "off-retina share",
        "off_retina",
        lambda result: result.area_share["off_retina"],
    ),
    Column("corners", "corner share", "corners", lambda result: result.area_share["corners"]),
)
REFERENCE_ROW = "random maps / area"


@dataclass(frozen=True)
class Row:
    """A row of the audit table: a method (or the reference row), one value per column."""

    method: str
    values: tuple[float | None, ...]
    best: bool = False
    sanity: bool | None = None  # None for the reference row


def table_rows(result: AuditResult) -> list[Row]:
    """The methods' rows, then the reference row, in :data:`COLUMNS` order."""
    rows = [
        Row(
            method=name,
            values=tuple(summary.scores["all"].get(column.metric) for column in COLUMNS),
            best=name == result.best_method,
            sanity=summary.sanity.passed,
        )
        for name, summary in result.methods.items()
    ]
    rows.append(Row(REFERENCE_ROW, tuple(column.reference(result) for column in COLUMNS)))
    return rows


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
