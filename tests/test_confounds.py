"""The dataset confound scan: flags a planted corner mark and a class-coded width, stays quiet on
clean synthetic data, and refuses data it cannot test."""

from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from sklearn.linear_model import RidgeClassifier
from sklearn.metrics import balanced_accuracy_score
from sklearn.preprocessing import StandardScaler

from octlens.data import confound_scan
from octlens.data.confounds import (
    RIDGE_ALPHA,
    ConfoundReport,
    balanced_accuracy,
    fold_hat_matrices,
    out_of_fold_scores,
)
from octlens.data.synth import synthesize
from octlens.errors import OctlensError

PERMUTATIONS = 199
OCTLENS = [sys.executable, "-c", "from octlens.cli import main; main()"]


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    root = tmp_path_factory.mktemp("confounds") / "clean"
    synthesize(root, 24, seed=3, size=(124, 128), workers=1)
    return root


def test_clean_synthetic_data_has_no_confound(clean, tmp_path):
    report = confound_scan(clean, tmp_path, permutations=PERMUTATIONS)
    assert report.flagged == []
    assert report.groups["size"].balanced_accuracy is None  # every scan 128 x 124: constant
    assert report.shuffled == "patients"  # synthetic patients have one class each
    assert report.threshold == pytest.approx(0.05 / 8)
    assert ConfoundReport.load(tmp_path / "confounds.json") == report
    assert (tmp_path / "confounds.png").stat().st_size > 0


def test_a_planted_corner_mark_is_flagged_on_corners(tmp_path):
    data = tmp_path / "marked"
    synthesize(data, 24, seed=3, size=(124, 128), workers=1, shortcut="corner", shortcut_rate=1.0)
    report = confound_scan(data, tmp_path / "out", ["train", "val"], permutations=PERMUTATIONS)
    assert "corners" in report.flagged
    corners = report.groups["corners"]
    assert corners.balanced_accuracy > 0.6 > corners.null_95  # chance 0.25
    assert "size" not in report.flagged


def test_a_width_coded_by_class_is_flagged_on_size(clean, tmp_path):
    data = tmp_path / "widths"
    shutil.copytree(clean, data, ignore=shutil.ignore_patterns("masks", "retina"))
    for path in data.glob("*/*/*.jpeg"):
        if path.parent.name in ("CNV", "DME"):  # half the classes acquired wider
            with Image.open(path) as image:
                image.resize((192, 124)).save(path, quality=95)
    report = confound_scan(data, tmp_path / "out", permutations=PERMUTATIONS)
    assert "size" in report.flagged
    assert report.groups["size"].contingency_p < report.threshold
    table = report.contingency["size"]
    assert table["192x124"]["DRUSEN"] == 0 and table["128x124"]["CNV"] == 0
    assert table["192x124"]["CNV"] == 24


def test_the_closed_form_ridge_is_scikit_learns_ridge_classifier():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 60)
    features = rng.normal(size=(60, 5)) + labels[:, None] * [1, 0, 0, 0, 0]
    groups = np.arange(60) // 2
    fitted = fold_hat_matrices(features, labels, groups, 5, seed=0)
    predicted = np.empty_like(labels)
    for train, test, _ in fitted:
        scaler = StandardScaler().fit(features[train])
        z_train, z_test = scaler.transform(features[train]), scaler.transform(features[test])
        expanded = StandardScaler().fit(np.hstack([z_train, z_train**2]))
        model = RidgeClassifier(alpha=RIDGE_ALPHA).fit(
            expanded.transform(np.hstack([z_train, z_train**2])), labels[train]
        )
        predicted[test] = model.predict(expanded.transform(np.hstack([z_test, z_test**2])))
    ours = out_of_fold_scores(fitted, labels[None], 3)[0]
    assert ours == pytest.approx(balanced_accuracy_score(labels, predicted))
    for train, test, _ in fitted:  # folds never split a patient
        assert not set(groups[train]) & set(groups[test])


def test_balanced_accuracy_by_hand():
    truth = np.array([[0, 0, 0, 1]])
    # recall 2/3 for class 0, 1/1 for class 1 -> 5/6
    assert balanced_accuracy(truth, np.array([[0, 0, 1, 1]]), 3)[0] == pytest.approx(5 / 6)


def test_data_it_cannot_test_is_one_line(clean, tmp_path):
    one_class = tmp_path / "one"
    (one_class / "CNV").mkdir(parents=True)
    for path in sorted((clean / "train" / "CNV").glob("*.jpeg"))[:4]:
        shutil.copy(path, one_class / "CNV" / path.name)
    with pytest.raises(OctlensError, match="at least two classes"):
        confound_scan(one_class, tmp_path / "out")
    one_patient = tmp_path / "patient"
    for name in ("CNV", "NORMAL"):
        (one_patient / name).mkdir(parents=True)
        image = Image.fromarray(np.zeros((20, 20), np.uint8))
        for n in (1, 2):
            image.save(one_patient / name / f"{name}-1000-{n}.jpeg")
    with pytest.raises(OctlensError, match="at least two patients"):
        confound_scan(one_patient, tmp_path / "out")


@pytest.mark.slow
def test_cli_needs_an_out_folder_and_prints_the_table(clean, tmp_path):
    command = [*OCTLENS, "inspect", str(clean), "--confounds"]
    refused = subprocess.run(command, capture_output=True, text=True)
    assert refused.returncode == 2
    assert (
        refused.stderr.strip()
        == "error: --confounds needs --out DIR for confounds.json and its figure"
    )
    done = subprocess.run(
        [*command, "--out", str(tmp_path), "--permutations", "50", "--split", "test"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert "confounds flagged: none" in done.stdout
    assert ConfoundReport.load(tmp_path / "confounds.json").splits == ["test"]


def test_the_report_section_escapes_and_refuses_edited_files(clean, tmp_path):
    from octlens.report.confounds_section import confounds_html

    report = confound_scan(clean, tmp_path, permutations=20)
    edited = report.model_copy(update={"data": "<script>alert(1)</script>"})
    edited.save(tmp_path / "confounds.json")
    page = confounds_html(tmp_path)
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "Dataset confounds" in page and "size by class" in page
    (tmp_path / "confounds.json").write_text('{"data": 1')
    with pytest.raises(OctlensError, match=r"confounds\.json: not a readable JSON file"):
        confounds_html(tmp_path)
    (tmp_path / "confounds.json").write_text('{"data": "x"}')
    with pytest.raises(OctlensError, match="not a confound scan this octlens can read"):
        confounds_html(tmp_path)


@pytest.mark.slow
def test_broken_scans_are_left_out_and_named_and_bad_options_are_one_line(clean, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(clean, data)
    broken = sorted((data / "train" / "DME").glob("*.jpeg"))[0]
    content = broken.read_bytes()  # cut short with a new end marker: fails only when decoded
    broken.write_bytes(content[: len(content) // 2] + b"\xff\xd9")
    with pytest.warns(UserWarning, match=f"left out 1 unreadable scan.*{broken.name}"):
        report = confound_scan(data, tmp_path / "out", permutations=20)
    assert report.unreadable == [str(broken)] and report.n_scans == 95
    mask = data / "retina" / "train" / "CNV" / sorted((data / "train" / "CNV").glob("*"))[0].name
    Image.new("L", (10, 10)).save(mask.with_suffix(".png"))
    with pytest.raises(OctlensError, match=r"retina mask is 10x10, its scan 128x124"):
        confound_scan(data, tmp_path / "out", permutations=20)
    command = [*OCTLENS, "inspect", str(clean), "--confounds"]
    (tmp_path / "file").write_text("x")
    for extra, message in (
        (["--out", str(tmp_path / "file")], "file"),
        (["--out", str(tmp_path / "o"), "--permutations", "0"], "permutations"),
        (["--out", str(tmp_path / "o"), "--split", "nope"], "no split named 'nope'"),
    ):
        done = subprocess.run([*command, *extra], capture_output=True, text=True)
        assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert message in done.stderr


def test_a_scan_swapped_for_another_format_after_decoding_is_unreadable_not_decoded(tmp_path):
    """The scan is read a second time for its file facts; a file replaced by then (an EPS
    under the scan's name) is left out as unreadable, and Ghostscript's plugin is never used."""
    from octlens.data.confounds import _file_facts
    from octlens.data.images import UnreadableImageError
    from octlens.data.index import Sample

    swapped = tmp_path / "CNV-1-1.jpeg"
    swapped.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\nshowpage\n")
    with pytest.raises(UnreadableImageError, match=r"CNV-1-1\.jpeg: not a readable image"):
        _file_facts(Sample(swapped, 0))
