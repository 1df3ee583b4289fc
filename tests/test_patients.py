"""Patient ids for the user's own data: a manifest (--patients) or a name pattern
(--patient-pattern), used by splits, leakage checks and the confound scan's folds."""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from helpers import run_cli
from octlens.data.index import DataWarning, scan
from octlens.data.patients import PatientSource, is_patient_id
from octlens.data.splits import find_leakage
from octlens.errors import OctlensError

PATTERN = r"(P-\d+[a-z]?)_"
# (split, class, file): P-007a has scans in train and test; the others stay on one side.
SCANS = [
    ("train", "CNV", "P-007a_1.png"),
    ("train", "CNV", "P-007a_2.png"),
    ("train", "NORMAL", "P-008_1.png"),
    ("test", "CNV", "P-007a_3.png"),
    ("test", "NORMAL", "P-009_1.png"),
]


@pytest.fixture
def own_data(tmp_path) -> Path:
    """A dataset whose names OCT2017's CLASS-PATIENT-N rule cannot read."""
    root = tmp_path / "data"
    for value, (split, label, name) in enumerate(SCANS):
        path = root / split / label / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((32, 40), 40 * value, dtype=np.uint8)).save(path)
    return root


def _manifest(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _patients(index) -> dict[str, str]:
    return {s.path.name: s.patient for samples in index.splits.values() for s in samples}


def test_without_ids_no_scan_has_a_patient_and_that_is_said_in_one_line(own_data):
    index = scan(own_data)
    assert set(_patients(index).values()) == {""}
    with pytest.warns(DataWarning, match="no scan has a patient id") as caught:
        assert find_leakage(index) == []  # nothing to compare: not "no leakage"
    assert len(caught) == 1 and "\n" not in str(caught[0].message)


def test_a_manifest_gives_alphanumeric_ids_to_the_leakage_check(own_data, tmp_path):
    rows = ["file,patient,eye"]  # extra columns are ignored; paths or unique bare names
    rows += [f"{split}/{label}/{name},{name.split('_')[0]},OD" for split, label, name in SCANS[:3]]
    rows += ["P-007a_3.png,P-007a,OS", r".\test\NORMAL\P-009_1.png,P-009,OD"]
    manifest = _manifest(tmp_path / "patients.csv", "\ufeff" + "\n".join(rows) + "\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        index = scan(own_data, patients=PatientSource(manifest=manifest))
        leaks = find_leakage(index)
    assert _patients(index)["P-007a_3.png"] == "P-007a"
    assert [(leak.kind, leak.key, leak.splits) for leak in leaks] == [
        ("patient", "P-007a", ("test", "train"))
    ]


def test_a_manifest_row_of_an_unreadable_scan_is_left_to_the_index(own_data, tmp_path):
    """A corrupt scan is skipped by the index with its own warning; the manifest that lists it
    still describes the data, so the other scans keep their ids."""
    rows = ["file,patient"] + [f"{s}/{c}/{n},{n.split('_')[0]}" for s, c, n in SCANS]
    manifest = _manifest(tmp_path / "patients.csv", "\n".join(rows) + "\n")
    (own_data / "train" / "CNV" / "P-007a_2.png").write_bytes(b"not a png")
    with pytest.warns(DataWarning, match="P-007a_2.png"):
        index = scan(own_data, patients=PatientSource(manifest=manifest))
    readable = [name for _, _, name in SCANS if name != "P-007a_2.png"]
    assert _patients(index) == {name: name.split("_")[0] for name in readable}


@pytest.mark.parametrize("pattern", [PATTERN, r"(?P<patient>P-\d+[a-z]?)_\d+\.png$"])
def test_a_name_pattern_gives_ids_to_the_leakage_check(own_data, pattern):
    index = scan(own_data, patients=PatientSource(pattern=pattern))
    assert _patients(index) == {name: name.split("_")[0] for _, _, name in SCANS}
    assert [leak.key for leak in find_leakage(index)] == ["P-007a"]


def test_scans_the_pattern_misses_are_counted_in_one_warning(own_data):
    with pytest.warns(DataWarning, match=r"1 of 5 scan\(s\) have no patient id .*/P-009_1\.png"):
        index = scan(own_data, patients=PatientSource(pattern=r"(P-00[78]a?)_"))
    assert _patients(index)["P-009_1.png"] == ""


def test_training_carves_validation_by_the_given_patients(tiny_data, tmp_path):
    from octlens.training import TrainConfig, train

    data = tmp_path / "own"
    for path in sorted((tiny_data / "train").rglob("*.jpeg")):  # CNV-100005-1 -> P100005x_1
        label, patient, number = path.stem.split("-")
        target = data / label / f"P{patient}x_{number}.jpeg"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target)
    out = tmp_path / "run"
    settings_ = {"img_size": 16, "epochs": 1, "batch_size": 8, "num_workers": 0}
    config = TrainConfig(data=data, out=out, patient_pattern=r"(P\d+x)_", **settings_)
    train(config, verbose=False)
    carved = {
        Path(name).name for name in json.loads((out / "splits.json").read_text())["splits"]["val"]
    }
    patient = {p.name: p.stem.split("_")[0] for p in data.rglob("*.jpeg")}
    val = {patient[name] for name in carved}
    trained = {patient[name] for name in patient if name not in carved}
    assert val and trained and not val & trained
    assert len(set(patient.values())) < len(patient)  # patients of several scans: a real test


def test_a_run_resumes_with_its_manifest_named_by_another_path(tiny_data, tmp_path):
    from octlens.training import TrainConfig, train

    rows = ["file,patient"] + [
        f"{path.relative_to(tiny_data).as_posix()},P{path.stem.split('-')[1]}"
        for path in sorted(tiny_data.rglob("*.jpeg"))
        if path.parent.parent.parent == tiny_data
    ]
    manifest = _manifest(tmp_path / "patients.csv", "\n".join(rows) + "\n")
    (tmp_path / "elsewhere").mkdir()
    settings_ = {"img_size": 16, "epochs": 1, "batch_size": 8, "num_workers": 0}
    first = TrainConfig(data=tiny_data, out=tmp_path / "run", patients=manifest, **settings_)
    train(first, verbose=False)
    again = first.model_copy(update={"patients": tmp_path / "elsewhere" / ".." / "patients.csv"})
    result = train(again, resume=True, verbose=False)  # not "cannot resume (patients)"
    assert result.best_epoch == 1


def test_the_confound_scan_folds_by_the_given_patients(tiny_data, tmp_path):
    from octlens.data import confound_scan

    data = tmp_path / "own"
    rows = ["file,patient"]
    for i, path in enumerate(sorted((tiny_data / "train").rglob("*.jpeg"))):
        label, patient, _ = path.stem.split("-")
        (data / label).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, data / label / f"scan{i}.jpeg")
        rows.append(f"{label}/scan{i}.jpeg,id-{patient}")
    manifest = _manifest(tmp_path / "patients.csv", "\n".join(rows))
    patients = len({row.split(",")[1] for row in rows[1:]})
    with pytest.warns(DataWarning, match="no scan has a patient id"):
        alone = confound_scan(data, tmp_path / "alone", permutations=9)
    # no ids: every scan a group of its own, and no patient counted
    assert (alone.n_patients, alone.n_without_patient) == (0, len(rows) - 1)
    assert alone.who == f"0 patients and {len(rows) - 1} scan(s) without a patient id"
    report = confound_scan(
        data, tmp_path / "out", permutations=9, patients=PatientSource(manifest=manifest)
    )
    assert report.n_patients == patients < len(rows) - 1
    assert report.shuffled == "patients"


def _bad_manifests(tmp_path: Path) -> list[tuple[Path, str]]:
    hostile = ["", "P 007", "evil\nleak: patient 1", "[red]x", "a,b", "../up", "x" * 65, "é1"]
    cases = []
    for i, patient in enumerate(hostile):
        text = io.StringIO()
        csv.writer(text).writerows([["file", "patient"], ["train/CNV/P-007a_1.png", patient]])
        cases.append((_manifest(tmp_path / f"hostile{i}.csv", text.getvalue()), "patient id"))
    folder = tmp_path / "folder.csv"
    folder.mkdir()
    latin = tmp_path / "latin.csv"
    latin.write_bytes(b"file,patient\nP-007a_1.png,caf\xe9\n")
    texts = {
        "header": ("name,id\nP-007a_1.png,P1\n", "needs a header row with columns 'file'"),
        "short": ("file,patient\nP-007a_1.png\n", "line 2: 1 field(s)"),
        "empty": ("file,patient\n,P1\n", "line 2: the file is empty"),
        "absent": ("file,patient\nP-007a_1.png,P1\nnowhere.png,P2\n", "1 file(s) listed are not"),
        "outside": ("file,patient\n../data/train/CNV/P-007a_1.png,P1\n", "not readable scans"),
        "twice": (
            "file,patient\ntrain/NORMAL/P-008_1.png,P1\n./train/NORMAL/P-008_1.png,P2\n",
            "listed again",
        ),
        "nothing": ("file,patient\n", "lists no scans"),
        "huge": ("file,patient\nP-008_1.png," + "9" * 200_000 + "\n", "not a readable CSV"),
    }
    cases += [(_manifest(tmp_path / f"{k}.csv", text), msg) for k, (text, msg) in texts.items()]
    return [
        *cases,
        (tmp_path / "missing.csv", "cannot read patients"),
        (folder, "cannot read patients"),
        (latin, "not UTF-8 text"),
    ]


def test_every_bad_manifest_is_a_one_line_error(own_data, tmp_path):
    (own_data / "test" / "CNV" / "P-008_1.png").write_bytes(  # one bare name, two scans
        (own_data / "train" / "NORMAL" / "P-008_1.png").read_bytes()
    )
    ambiguous = _manifest(tmp_path / "amb.csv", "file,patient\nP-008_1.png,P1\n")
    for manifest, message in [*_bad_manifests(tmp_path), (ambiguous, "names 2 scans")]:
        with pytest.raises(OctlensError, match=re.escape(message)) as error:
            scan(own_data, patients=PatientSource(manifest=manifest))
        assert "\n" not in str(error.value), manifest


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ({"pattern": "(P-"}, "not a regular expression"),
        ({"pattern": r"P-\d+"}, "has no group; put the patient id in parentheses"),
        ({"pattern": r"(Q\d+)"}, "matches no scan of"),
        ({"pattern": r"(.*)_"}, r"gives the patient id '\w+/CNV/P-007a'"),
        ({"pattern": r"(_\d)\.png"}, r"gives the patient id '_\d'"),
        ({"pattern": "(x)", "manifest": Path("p.csv")}, "not both"),
    ],
)
def test_every_bad_pattern_is_a_one_line_error(own_data, source, message):
    with pytest.raises(OctlensError, match=message) as error:
        scan(own_data, patients=PatientSource(**source))
    assert "\n" not in str(error.value)


def test_a_medmnist_file_has_no_files_to_name_patients(tmp_path):
    path = tmp_path / "oct.npz"
    np.savez(path, train_images=np.zeros((2, 8, 8), np.uint8), train_labels=np.array([0, 1]))
    with pytest.raises(OctlensError, match=r"needs a dataset folder, not a \.npz"):
        scan(path, patients=PatientSource(pattern="(x)"))


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_a_manifest_of_any_bytes_gives_valid_ids_or_one_line(own_data, tmp_path, content):
    manifest = tmp_path / "fuzz.csv"
    manifest.write_bytes(b"file,patient\n" + content)
    try:
        index = scan(own_data, patients=PatientSource(manifest=manifest))
    except OctlensError as error:
        assert "\n" not in str(error)
        return
    assert all(not patient or is_patient_id(patient) for patient in _patients(index).values())


@pytest.mark.slow
def test_inspect_reads_patients_and_says_when_there_are_none(own_data, tmp_path):
    result = run_cli("inspect", str(own_data), "--patient-pattern", PATTERN)
    assert result.returncode == 0, result.stderr
    assert "leak: patient P-007a in test, train" in result.stdout
    result = run_cli("inspect", str(own_data))
    assert result.returncode == 0, result.stderr
    assert "no leakage between splits" not in result.stdout
    assert "leakage not checked: no scan has a patient id" in result.stdout
    assert result.stderr.count("no scan has a patient id") == 1
    result = run_cli("inspect", str(own_data), "--patient-pattern", r"P-\d+")
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "has no group" in result.stderr
