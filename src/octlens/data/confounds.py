"""The dataset confound scan: before any model, can the label be predicted from things that are
not anatomy?

Every scan is described by feature groups, each scored alone:

=============  ======================================================  ========
group          features                                                kind
=============  ======================================================  ========
``size``       the image's width x height (one category per size)      confound
``file``       file format, JPEG quality (from the quantization        confound
               table; 0 for other formats)
``corners``    the four corner squares (1/5 of each side), 4 x 4 each  confound
``border``     the 1/8 border band of a 16 x 16 thumbnail              confound
``fill``       share of the scan in the scanner's white fill, off    confound
               the retina
``vitreous``   mean, spread and noise level (MAD of horizontal         confound
               differences) of the vitreous above the retina
``intensity``  mean, spread and 5/50/95th percentiles of all pixels    context
``file_size``  log bytes per pixel                                     context
=============  ======================================================  ========

Corners and border are read with the retina's pixels set to the scan's median off-retina level,
so where the retina reaches the edge (its sides, a thick DME retina) anatomy does not enter them.
Intensity and file size are moved by lesions too (drusen brighten, fluid darkens, texture makes
a JPEG larger), so they are context: reported, never flagged.

**Test.** Per group, a ridge classifier (the features and their squares, standardized; penalty
:data:`RIDGE_ALPHA`; the model of scikit-learn's ``RidgeClassifier``, in closed form so that a
shuffle costs one matrix product) is cross-validated with folds **grouped by patient**
(:data:`FOLDS` folds; scans without a patient id are their own group), and its out-of-fold
balanced accuracy is compared with chance (1/K) by a permutation test: the labels are shuffled
:data:`PERMUTATIONS` times, between patients when every patient has one class (so a patient's
scans stay together), else between scans, and
:math:`p = (1 + \\#\\{\\text{shuffled} \\ge \\text{observed}\\}) / (1 + n)`. The categorical groups
(``size`` and file format) also get a contingency table per class and a chi-square statistic,
whose p-value comes from the same shuffles, so a small sample's confound shows even where a
classifier is noisy.

**Rule.** A confound group is flagged when its classifier or its contingency test has
:math:`p < 0.05 / m` (Bonferroni over the *m* tests run on confound groups) and its balanced
accuracy is above chance. A group whose features do not vary is reported as constant.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from pydantic import BaseModel, ConfigDict
from sklearn.model_selection import StratifiedGroupKFold

from octlens.data.dataset import left_out
from octlens.data.images import FORMATS, UnreadableImageError, load_grayscale
from octlens.data.index import DatasetIndex, Sample
from octlens.data.regions import BORDER, CORNER, Region
from octlens.data.retina import find_retina, scanner_fill
from octlens.data.splits import warn_without_patients
from octlens.errors import OctlensError
from octlens.files import read_model, write_json
from octlens.progress import counted, progress_bar

FOLDS = 5
PERMUTATIONS = 999
#: Ridge penalty on standardized features.
RIDGE_ALPHA = 10.0
ALPHA = 0.05
#: Feature groups: the three named after a region (:class:`Region`) describe that region's pixels.
CONFOUND_GROUPS = ("size", "file", Region.CORNERS, Region.BORDER, Region.FILL, "vitreous")
CONTEXT_GROUPS = ("intensity", "file_size")
CATEGORICAL = ("size", "format")
#: The standard IJG luminance quantization table at quality 50, for the JPEG quality estimate.
_IJG_LUMINANCE_MEAN = 57.625


@dataclass
class ScanFeatures:
    """What the scan says about itself besides its anatomy."""

    size: str
    format: str
    numbers: dict[str, np.ndarray]  # group -> features


class GroupResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: str  # "confound" or "context"
    n_features: int
    balanced_accuracy: float | None  # None: constant features
    chance: float
    null_95: float | None  # 95th percentile of the shuffled balanced accuracies
    p_value: float | None
    contingency_p: float | None = None
    flagged: bool


class ConfoundReport(BaseModel):
    """What :func:`scan_confounds` found; ``confounds.json``."""

    model_config = ConfigDict(extra="forbid")

    data: str
    splits: list[str]
    n_scans: int
    n_patients: int  # distinct patient ids
    n_without_patient: int = 0  # scans without an id: each its own group in the folds
    classes: list[str]
    folds: int
    permutations: int
    shuffled: str  # "patients" or "scans"
    threshold: float  # the Bonferroni-corrected p-value below which a group is flagged
    groups: dict[str, GroupResult]
    contingency: dict[str, dict[str, dict[str, int]]]  # variable -> value -> class -> count
    unreadable: list[str]

    @property
    def who(self) -> str:
        """``"75 patients and 20 scans without a patient id"``: what the folds group."""
        unnamed = self.n_without_patient
        return f"{self.n_patients} patients" + (
            f" and {unnamed} scan(s) without a patient id" if unnamed else ""
        )

    @property
    def flagged(self) -> list[str]:
        return [name for name, group in self.groups.items() if group.flagged]

    def save(self, path: Path) -> None:
        write_json(path, self.model_dump(mode="json"))

    @classmethod
    def load(cls, path: Path) -> ConfoundReport:
        """Read ``confounds.json``; a truncated, edited or older file is a one-line error."""
        return read_model(cls, path, "a confound scan", "run 'octlens inspect --confounds' again")


def scan_features(index: DatasetIndex, sample: Sample) -> ScanFeatures:
    """The feature groups of one scan (see the module docstring)."""
    image = index.load(sample)
    pixels = np.asarray(image, dtype=np.uint8)
    height, width = pixels.shape
    format_name, file_size, quality = _file_facts(sample)
    values = pixels.astype(np.float32) / 255
    fill = scanner_fill(pixels)
    retina_path = index.mask_path(sample, "retina")
    if retina_path is not None:
        retina = np.asarray(load_grayscale(retina_path)) > 127
        if retina.shape != pixels.shape:
            raise OctlensError(
                f"{retina_path}: retina mask is {retina.shape[1]}x{retina.shape[0]}, "
                f"its scan {width}x{height}"
            )
        top = np.where(retina.any(axis=0), retina.argmax(axis=0), height)
    else:
        found = find_retina(pixels)
        retina, top = found.mask(), np.round(found.ilm).astype(int)
    vitreous = (np.arange(height)[:, None] < top[None, :] - 2) & ~fill
    # corners and border without the retina: its pixels become the scan's background level
    level = np.median(pixels[~retina]) if (~retina).any() else 0
    outside = Image.fromarray(np.where(retina, level, pixels).astype(np.uint8))
    return ScanFeatures(
        size=f"{width}x{height}",
        format=format_name,
        numbers={
            "file": np.array([quality]),
            "file_size": np.array([np.log(file_size / pixels.size)]),
            Region.CORNERS: _corners(outside),
            Region.BORDER: _border(outside),
            Region.FILL: np.array([(fill & ~retina).mean()]),
            "vitreous": _vitreous(values, vitreous),
            "intensity": np.array(
                [values.mean(), values.std(), *np.percentile(values, [5, 50, 95])]
            ),
        },
    )


def _file_facts(sample: Sample) -> tuple[str, float, float]:
    if sample.index is not None:  # an array in a .npz: no file of its own
        return "array", 1.0, 0.0
    try:  # read again for its file facts: it may have changed since it was decoded
        data = sample.path.read_bytes()
        with Image.open(io.BytesIO(data), formats=FORMATS) as image:  # as every read of a scan
            quantization = getattr(image, "quantization", None) or {}
            return image.format or "unknown", float(len(data)), _jpeg_quality(quantization)
    except (OSError, UnidentifiedImageError) as error:
        raise UnreadableImageError(f"{sample.path}: not a readable image ({error})") from None


def _jpeg_quality(tables: dict[int, Sequence[int]]) -> float:
    """The IJG quality (1-100) whose luminance table has the mean of this one; 0 if none."""
    if 0 not in tables:
        return 0.0
    scale = 100 * float(np.mean(tables[0])) / _IJG_LUMINANCE_MEAN
    quality = (200 - scale) / 2 if scale <= 100 else 5000 / scale
    return float(np.clip(quality, 1, 100))


def _corners(image: Image.Image, cells: int = 4) -> np.ndarray:
    width, height = image.size
    side_x, side_y = round(CORNER * width), round(CORNER * height)
    boxes = [
        (0, 0),
        (width - side_x, 0),
        (0, height - side_y),
        (width - side_x, height - side_y),
    ]
    squares = [
        np.asarray(
            image.crop((x, y, x + side_x, y + side_y)).resize((cells, cells), Image.Resampling.BOX),
            dtype=np.float32,
        )
        for x, y in boxes
    ]
    return np.concatenate([square.ravel() for square in squares]) / 255


def _border(image: Image.Image, size: int = 16) -> np.ndarray:
    thumbnail = np.asarray(image.resize((size, size), Image.Resampling.BOX), dtype=np.float32)
    band = max(1, round(BORDER * size))
    inner = np.zeros((size, size), dtype=bool)
    inner[band:-band, band:-band] = True
    return thumbnail[~inner] / 255


def _vitreous(values: np.ndarray, region: np.ndarray) -> np.ndarray:
    """Mean, spread and noise (MAD of horizontal differences inside the region / 0.6745 / sqrt 2)
    of the vitreous; zeros and a flag when a scan has none."""
    inside = values[region]
    pairs = region[:, 1:] & region[:, :-1]
    differences = (values[:, 1:] - values[:, :-1])[pairs]
    if len(inside) < 16 or len(differences) < 16:
        return np.zeros(4)
    noise = np.median(np.abs(differences - np.median(differences))) / 0.6745 / np.sqrt(2)
    return np.array([inside.mean(), inside.std(), noise, 1.0])


def scan_confounds(
    index: DatasetIndex,
    splits: Sequence[str] | None = None,
    permutations: int = PERMUTATIONS,
    folds: int = FOLDS,
    seed: int = 0,
    verbose: bool = True,
) -> ConfoundReport:
    """Score every feature group on the scans of ``splits`` (default: all, pooled); progress
    bars count the scans read and the groups tested (``verbose``, on a terminal)."""
    chosen = list(splits) if splits else sorted(index.splits)
    samples = [sample for split in chosen for sample in index.split(split)]
    warn_without_patients(index)  # the folds then group nothing: one eye may be on both sides
    features, positions = [], set()
    with progress_bar("reading scans for confounds", len(samples), verbose=verbose) as advance:
        for position, sample in enumerate(counted(samples, advance)):
            try:
                features.append(scan_features(index, sample))
            except UnreadableImageError:
                continue
            positions.add(position)
    unreadable = [str(sample.path) for sample in left_out(index, samples, positions)]
    readable = [sample for position, sample in enumerate(samples) if position in positions]
    labels = np.array([sample.label for sample in readable])
    groups = np.array([sample.patient or str(sample.path) for sample in readable])
    _require_testable(index, labels, groups)
    folds = min(folds, len(set(groups)), int(np.bincount(labels).max()))
    shuffles, shuffled = _shuffles(labels, groups, permutations, seed)
    chance = 1 / len(set(labels.tolist()))
    matrices = {
        "size": _one_hot([f.size for f in features]),
        "file": np.hstack(
            [_one_hot([f.format for f in features]), [f.numbers["file"] for f in features]]
        ),
        **{
            name: np.stack([f.numbers[name] for f in features])
            for name in (*CONFOUND_GROUPS[2:], *CONTEXT_GROUPS)
        },
    }
    categories = {"size": [f.size for f in features], "format": [f.format for f in features]}
    tests = len(CONFOUND_GROUPS) + len(CATEGORICAL)
    threshold = ALPHA / tests
    contingency_p = {
        name: _contingency_p(values, labels, shuffles) for name, values in categories.items()
    }
    results = {}
    with progress_bar("testing feature groups", len(matrices), "groups", verbose) as advance:
        for name, matrix in counted(matrices.items(), advance):
            kind = "context" if name in CONTEXT_GROUPS else "confound"
            table_p = contingency_p.get("format" if name == "file" else name)
            results[name] = _score_group(
                matrix, labels, groups, shuffles, folds, chance, kind, table_p, threshold, seed
            )
    return ConfoundReport(
        data=str(index.root),
        splits=chosen,
        n_scans=len(readable),
        n_patients=len({sample.patient for sample in readable if sample.patient}),
        n_without_patient=sum(1 for sample in readable if not sample.patient),
        classes=index.classes,
        folds=folds,
        permutations=permutations,
        shuffled=shuffled,
        threshold=threshold,
        groups=results,
        contingency={
            name: _table(values, labels, index.classes) for name, values in categories.items()
        },
        unreadable=unreadable,
    )


def _require_testable(index: DatasetIndex, labels: np.ndarray, groups: np.ndarray) -> None:
    present = sorted(set(labels.tolist()))
    if len(present) < 2:
        raise OctlensError(
            f"{index.root}: the confound scan needs scans of at least two classes "
            f"(found only {', '.join(index.classes[i] for i in present) or 'none'})"
        )
    if len(set(groups)) < 2:
        raise OctlensError(
            f"{index.root}: the confound scan needs at least two patients for grouped "
            "cross-validation (found one)"
        )


def _shuffles(
    labels: np.ndarray, groups: np.ndarray, count: int, seed: int
) -> tuple[np.ndarray, str]:
    """(count, N) shuffled labels: between patients when each patient has one class."""
    rng = np.random.default_rng(seed)
    patients, position = np.unique(groups, return_inverse=True)
    per_patient = [set(labels[position == p].tolist()) for p in range(len(patients))]
    if all(len(classes) == 1 for classes in per_patient):
        patient_labels = np.array([next(iter(classes)) for classes in per_patient])
        rows = [rng.permutation(patient_labels)[position] for _ in range(count)]
        return np.array(rows).reshape(count, len(labels)), "patients"
    return np.array([rng.permutation(labels) for _ in range(count)]).reshape(count, -1), "scans"


def _one_hot(values: list[str]) -> np.ndarray:
    kinds = sorted(set(values))
    return np.array([[value == kind for kind in kinds] for value in values], dtype=np.float64)


def fold_hat_matrices(
    matrix: np.ndarray, labels: np.ndarray, groups: np.ndarray, folds: int, seed: int
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    r"""Per fold ``(train, test, H)``: ridge regression's out-of-fold predictions are
    :math:`\hat Y_{test} = H Y_{train} + \bar Y_{train}` with
    :math:`H = \tilde X_{test} (\tilde X_{train}^T \tilde X_{train} + \alpha I)^{-1}
    \tilde X_{train}^T`, where :math:`\tilde X` holds the features and their squares, each
    standardized on the training fold (the squares let a level in the middle of a feature's range
    code a class, as a planted gray level does). A label shuffle then costs one matrix product
    instead of a fit."""
    splitter = StratifiedGroupKFold(folds, shuffle=True, random_state=seed)
    fitted = []
    for train, test in splitter.split(matrix, labels, groups):
        x_train, x_test = _standardized(matrix[train], matrix[test])
        x_train, x_test = _standardized(
            np.hstack([x_train, x_train**2]), np.hstack([x_test, x_test**2])
        )
        gram = x_train.T @ x_train + RIDGE_ALPHA * np.eye(x_train.shape[1])
        fitted.append((train, test, x_test @ np.linalg.solve(gram, x_train.T)))
    return fitted


def _standardized(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both scaled by the training rows' mean and standard deviation."""
    mean, spread = train.mean(axis=0), train.std(axis=0)
    spread = np.where(spread > 1e-12, spread, 1.0)
    return (train - mean) / spread, (test - mean) / spread


def out_of_fold_scores(
    fitted: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
    label_rows: np.ndarray,
    n_classes: int,
) -> np.ndarray:
    """(R,) balanced accuracy of the ridge classifier (targets +-1 per class, as scikit-learn's
    ``RidgeClassifier``) for each row of ``label_rows`` (R, N)."""
    predicted = np.empty_like(label_rows)
    for train, test, hat in fitted:
        targets = np.where(label_rows[:, train, None] == np.arange(n_classes), 1.0, -1.0)
        scores = np.einsum("ij,rjk->rik", hat, targets - targets.mean(axis=1, keepdims=True))
        predicted[:, test] = (scores + targets.mean(axis=1, keepdims=True)).argmax(axis=2)
    return balanced_accuracy(label_rows, predicted, n_classes)


def balanced_accuracy(truth: np.ndarray, predicted: np.ndarray, n_classes: int) -> np.ndarray:
    """(R,) mean recall over the classes present, for rows of labels and predictions (R, N)."""
    classes = np.arange(n_classes)[:, None, None]
    present = (truth[None] == classes).sum(axis=2)  # (K, R)
    hits = ((truth[None] == classes) & (predicted[None] == classes)).sum(axis=2)
    recall = np.where(present > 0, hits / np.maximum(present, 1), 0.0)
    return recall.sum(axis=0) / (present > 0).sum(axis=0)


def _score_group(
    matrix: np.ndarray,
    labels: np.ndarray,
    groups: np.ndarray,
    shuffles: np.ndarray,
    folds: int,
    chance: float,
    kind: str,
    contingency_p: float | None,
    threshold: float,
    seed: int,
) -> GroupResult:
    varying = matrix[:, matrix.std(axis=0) > 1e-12]
    if varying.shape[1] == 0:
        return GroupResult(
            kind=kind,
            n_features=matrix.shape[1],
            balanced_accuracy=None,
            chance=chance,
            null_95=None,
            p_value=None,
            contingency_p=contingency_p,
            flagged=False,
        )
    fitted = fold_hat_matrices(varying, labels, groups, folds, seed)
    n_classes = int(labels.max()) + 1
    observed = float(out_of_fold_scores(fitted, labels[None], n_classes)[0])
    null = out_of_fold_scores(fitted, shuffles, n_classes)
    p_value = float((1 + (null >= observed).sum()) / (1 + len(null)))
    significant = p_value < threshold or (contingency_p is not None and contingency_p < threshold)
    return GroupResult(
        kind=kind,
        n_features=matrix.shape[1],
        balanced_accuracy=observed,
        chance=chance,
        null_95=float(np.percentile(null, 95)),
        p_value=p_value,
        contingency_p=contingency_p,
        flagged=kind == "confound" and significant and observed > chance,
    )


def _chi_square(values: np.ndarray, labels: np.ndarray, n_classes: int) -> float:
    kinds, codes = np.unique(values, return_inverse=True)
    table = np.zeros((len(kinds), n_classes))
    np.add.at(table, (codes, labels), 1)
    expected = table.sum(1, keepdims=True) * table.sum(0, keepdims=True) / table.sum()
    safe = np.where(expected > 0, expected, 1)
    return float((np.where(expected > 0, (table - expected) ** 2 / safe, 0)).sum())


def _contingency_p(values: list[str], labels: np.ndarray, shuffles: np.ndarray) -> float | None:
    """Permutation p-value of the chi-square statistic (valid with small expected counts);
    None when every scan has the same value."""
    array = np.array(values)
    if len(set(values)) < 2:
        return None
    n_classes = int(max(labels.max(), shuffles.max())) + 1
    observed = _chi_square(array, labels, n_classes)
    null = np.array([_chi_square(array, y, n_classes) for y in shuffles])
    return float((1 + (null >= observed - 1e-9).sum()) / (1 + len(null)))


def _table(values: list[str], labels: np.ndarray, classes: list[str]) -> dict[str, dict[str, int]]:
    return {
        value: {
            name: int(((np.array(values) == value) & (labels == i)).sum())
            for i, name in enumerate(classes)
        }
        for value in sorted(set(values))
    }
