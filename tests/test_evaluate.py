from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from sklearn.metrics import f1_score, precision_score, recall_score, roc_auc_score

from helpers import tiny_config
from octlens.errors import OctlensError
from octlens.evaluate import calibration_bins, classification_metrics, evaluate_run
from octlens.training import train

CLASSES = ["CNV", "DME", "DRUSEN", "NORMAL"]


def _known_case():
    rng = np.random.default_rng(0)
    labels = np.array([0, 0, 0, 1, 1, 2, 2, 2, 3, 3, 3, 3])
    logits = rng.normal(size=(len(labels), 4))
    logits[np.arange(len(labels)), labels] += 1.5
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return labels, probs


def test_metrics_agree_with_scikit_learn():
    labels, probs = _known_case()
    predictions = probs.argmax(1)
    metrics = classification_metrics(labels, probs, CLASSES)
    assert metrics.accuracy == pytest.approx((predictions == labels).mean())
    recall = recall_score(labels, predictions, average=None)
    precision = precision_score(labels, predictions, average=None, zero_division=0)
    f1 = f1_score(labels, predictions, average=None)
    for i, name in enumerate(CLASSES):
        per_class = metrics.per_class[name]
        assert per_class.sensitivity == pytest.approx(recall[i])
        assert per_class.precision == pytest.approx(precision[i])
        assert per_class.f1 == pytest.approx(f1[i])
        negatives = labels != i
        specificity = (predictions[negatives] != i).mean()
        assert per_class.specificity == pytest.approx(specificity)
        assert per_class.support == (labels == i).sum()
    assert metrics.macro_auc == pytest.approx(
        roc_auc_score(labels, probs, multi_class="ovr", average="macro")
    )
    urgent = np.isin(labels, [0, 1])
    called = np.isin(predictions, [0, 1])
    assert metrics.urgent_referral.sensitivity == pytest.approx(called[urgent].mean())
    assert metrics.urgent_referral.specificity == pytest.approx((~called[~urgent]).mean())
    assert np.array(metrics.confusion_matrix).sum() == len(labels)


def test_hand_computed_specificity_and_confusion():
    labels = np.array([0, 0, 1, 1])
    probs = np.array([[0.9, 0.1], [0.4, 0.6], [0.2, 0.8], [0.3, 0.7]])
    metrics = classification_metrics(labels, probs, ["A", "B"])
    assert metrics.confusion_matrix == [[1, 1], [0, 2]]
    assert metrics.per_class["A"].specificity == 1.0  # no B called A
    assert metrics.per_class["B"].specificity == 0.5  # one of two A called B
    assert metrics.urgent_referral is None  # not an OCT2017 class set


def test_expected_calibration_error_by_hand():
    labels = np.array([0, 0, 1, 1])
    # Confidences 0.9, 0.9 (one right) and 0.6, 0.6 (both right).
    probs = np.array([[0.9, 0.1], [0.1, 0.9], [0.4, 0.6], [0.4, 0.6]])
    ece, bins = calibration_bins(labels, probs, n_bins=10)
    # |0.5 - 0.9| * 2/4 + |1.0 - 0.6| * 2/4
    assert ece == pytest.approx(0.4)
    assert [b.count for b in bins] == [2, 2]


def test_evaluate_run_writes_metrics_predictions_and_figures(tiny_data, tmp_path):
    run = tmp_path / "run"
    train(
        tiny_config(tiny_data, run, seed=0),
        verbose=False,
    )
    metrics = evaluate_run(run, tiny_data, "test")
    out = run / "eval" / "test"
    for name in (
        "metrics.json",
        "predictions.csv",
        "confusion_matrix.png",
        "roc.png",
        "reliability.png",
    ):
        assert (out / name).is_file(), name
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["accuracy"] == metrics.accuracy and saved["split"] == "test"
    with open(out / "predictions.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == metrics.n and rows[0]["label"] in CLASSES
    probs = np.array([[float(row[f"p_{c}"]) for c in CLASSES] for row in rows])
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-4)

    # data with only some of the run's classes is scored; one it does not know is refused
    other = tmp_path / "other"
    (other / "test" / "DME").mkdir(parents=True)
    (other / "test" / "NORMAL").mkdir(parents=True)  # empty: a class without scans
    scans = sorted((tiny_data / "test" / "DME").iterdir())
    for src in scans:
        (other / "test" / "DME" / src.name).write_bytes(src.read_bytes())
    partial = evaluate_run(run, other, "test", out=tmp_path / "partial")
    assert partial.n == len(scans) and partial.per_class["DME"].support == len(scans)
    assert partial.absent_classes == ["CNV", "DRUSEN", "NORMAL"]
    assert partial.per_class["NORMAL"].sensitivity is None and partial.macro_auc is None
    assert "holds 1 of the model's 4 classes" in partial.coverage_note()
    (other / "test" / "XYZ").mkdir()
    (other / "test" / "XYZ" / src.name).write_bytes(src.read_bytes())
    with pytest.raises(OctlensError, match=r"class\(es\) XYZ are not among the checkpoint's"):
        evaluate_run(run, other, "test")


def test_metrics_of_data_holding_some_classes_leave_the_rest_undefined():
    """Every scan DME, three of them called DME: sensitivity of the absent classes is not 0 (a
    model missing every scan of them) but undefined, as is the precision of a class never
    predicted and every AUC (one class present has no negatives)."""
    labels = np.array([1, 1, 1, 1])
    probs = np.array([[0.1, 0.7, 0.1, 0.1]] * 3 + [[0.6, 0.2, 0.1, 0.1]])
    metrics = classification_metrics(labels, probs, CLASSES)
    dme, cnv, drusen = (metrics.per_class[name] for name in ("DME", "CNV", "DRUSEN"))
    assert dme.sensitivity == 0.75 and dme.precision == 1.0 and dme.specificity is None
    assert cnv.sensitivity is None and cnv.f1 is None and cnv.precision == 0.0
    assert cnv.specificity == 0.75  # one of four non-CNV scans called CNV
    assert drusen.precision is None and drusen.specificity == 1.0
    assert metrics.macro_auc is None and all(m.auc is None for m in metrics.per_class.values())
    assert metrics.absent_classes == ["CNV", "DRUSEN", "NORMAL"]
    assert metrics.urgent_referral.sensitivity == 1.0  # CNV and DME are both urgent
    note = metrics.coverage_note()
    assert note.endswith("no class has an AUC (it needs scans of the class and of another)")
    assert classification_metrics(*_known_case(), CLASSES).coverage_note() is None
