"""Files that lie: broken scans among good ones, edited checkpoints, edited or stale results.

Each must end in a one-line error or an honest count, never in a number computed from the wrong
thing.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from helpers import broken_png, tiny_config
from octlens.audit import audit_run
from octlens.data.index import DataWarning
from octlens.errors import OctlensError
from octlens.evaluate import evaluate_run
from octlens.explain.runner import explain_images
from octlens.report import write_report
from octlens.training import load_checkpoint, train


@pytest.fixture(scope="module")
def run(tiny_data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "resnet"
    train(tiny_config(tiny_data, out, seed=0), verbose=False)
    return out


@pytest.fixture
def data_with_a_broken_scan(tiny_data, tmp_path) -> tuple[Path, Path]:
    """A copy of the tiny data whose first CNV test scan is a PNG with valid CRCs and a broken
    deflate stream: it passes the scan-time check and fails only when decoded."""
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    victim = sorted((data / "test" / "CNV").iterdir())[0]
    victim.unlink()
    broken = victim.with_suffix(".png")
    broken_png(broken, (128, 124))
    return data, broken


def test_evaluation_leaves_out_a_scan_that_cannot_be_decoded(run, data_with_a_broken_scan):
    data, broken = data_with_a_broken_scan
    with pytest.warns(DataWarning, match=rf"left out 1 unreadable scan\(s\) of \d+: {broken}"):
        metrics = evaluate_run(run, data, "test", out=data.parent / "eval")
    n_test = len(list((data / "test").rglob("*.*")))
    assert metrics.n == n_test - 1
    assert metrics.unreadable == [str(broken)]
    assert sum(metrics.confusion_matrix[0]) == len(list((data / "test" / "CNV").iterdir())) - 1
    with open(data.parent / "eval" / "predictions.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == n_test - 1 and all(row["label"] for row in rows)
    assert str(broken) not in {row["path"] for row in rows}
    assert len({row["path"] for row in rows}) == len(rows)  # no scan counted twice


def test_evaluation_with_no_decodable_scan_is_one_line(run, tiny_data, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    for scan_file in list((data / "test").rglob("*.*")):
        scan_file.unlink()
        broken_png(scan_file.with_suffix(".png"), (128, 124))
    with pytest.raises(OctlensError, match=r"none of the \d+ scans could be read \(.*\.png"):
        evaluate_run(run, data, "test", out=tmp_path / "eval")


def test_the_audit_leaves_out_a_scan_that_cannot_be_decoded(run, data_with_a_broken_scan):
    data, broken = data_with_a_broken_scan
    with pytest.warns(DataWarning, match="left out 1 unreadable scan"):
        result = audit_run(
            run, data, "test", methods=["gradcam"], steps=2, sanity_scans=2, out=data / "a"
        )
    assert result.unreadable == [str(broken)]
    assert result.n_scans == len(list((data / "test").rglob("*.*"))) - 1
    assert result.precision == "fp32"


def test_results_record_their_data_and_precision_on_any_cpu(run, tiny_data, monkeypatch):
    monkeypatch.setenv("OCTLENS_CPU_BF16", "1")  # a CPU with native bf16: auto trains in bf16...
    metrics = evaluate_run(run, tiny_data, "test", out=run / "eval-bf16-cpu")
    assert metrics.precision == "fp32"  # ...but measures in fp32
    assert metrics.data == str(tiny_data) and metrics.split == "test"
    assert len(metrics.data_fingerprint) == 16
    assert evaluate_run(run, tiny_data, "test", precision="bf16", out=run / "e").precision == (
        "bf16"
    )


def _tampered(source: Path, target: Path, tensors=None, **meta_changes) -> Path:
    """A copy of checkpoint ``source`` with its metadata (and optionally tensors) edited."""
    with safe_open(str(source), framework="pt") as handle:
        meta = json.loads(handle.metadata()["octlens"])
    for key, value in meta_changes.items():
        if value is None:
            meta.pop(key, None)
        else:
            meta[key] = value
    target.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors or load_file(str(source)), target, metadata={"octlens": json.dumps(meta)})
    return target


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"normalization": None}, r"invalid checkpoint metadata \(normalization: Field required"),
        ({"img_size": 0}, r"invalid checkpoint metadata \(img_size: .*greater than or equal to 16"),
        ({"img_size": "<script>"}, r"img_size: Input should be a valid integer"),
        ({"normalization": {"mean": 0.5, "std": 0}}, r"normalization.std: .*greater than 0"),
        ({"classes": []}, r"classes: List should have at least 1 item"),
        ({"model": {"name": "resnet50"}}, r"weights do not fit the recorded model 'resnet50'"),
        ({"model": {"name": "no_such_net"}}, r"unknown model 'no_such_net'"),
    ],
)
def test_edited_checkpoints_are_one_line_errors(run, tiny_data, tmp_path, changes, message):
    path = _tampered(run / "best.safetensors", tmp_path / "run" / "best.safetensors", **changes)
    with pytest.raises(OctlensError, match=message) as error:
        load_checkpoint(path).build_model()
    assert "\n" not in str(error.value) and str(error.value).startswith(str(path))
    with pytest.raises(OctlensError, match=message):
        evaluate_run(path.parent, tiny_data, "test")


def test_nan_weights_are_refused_before_any_number_or_map(run, tiny_data, tmp_path):
    tensors = load_file(str(run / "best.safetensors"))
    key = next(k for k in tensors if k.endswith("conv1.weight"))
    tensors[key] = torch.full_like(tensors[key], float("nan"))
    path = _tampered(run / "best.safetensors", tmp_path / "nan" / "best.safetensors", tensors)
    scans = sorted((tiny_data / "test").rglob("*.jpeg"))[:2]
    for attempt in (
        lambda: evaluate_run(path.parent, tiny_data, "test"),
        lambda: audit_run(path.parent, tiny_data, "test", steps=2, sanity_scans=2),
        lambda: explain_images(path.parent, scans, ["gradcam"], tmp_path / "maps"),
    ):
        with pytest.raises(OctlensError, match=r"hold NaN or infinity \(e.g. conv1.weight\)"):
            attempt()
    assert not (tmp_path / "maps").exists() or not list((tmp_path / "maps").iterdir())


@pytest.fixture(scope="module")
def evaluated(run, tiny_data) -> Path:
    evaluate_run(run, tiny_data, "test")
    return run


def test_the_report_escapes_every_value_from_a_file_and_forbids_scripts(evaluated, tmp_path):
    run = evaluated
    hostile = tmp_path / "hostile"
    hostile.mkdir()
    for name in ("history.csv", "learning_curves.png"):
        shutil.copy(run / name, hostile / name)
    script = "<script>alert(1)</script>"
    _tampered(
        run / "best.safetensors",
        hostile / "best.safetensors",
        epoch=1,
        classes=["CNV", "DME", "DRUSEN", "<img src=x onerror=alert(1)>"],
    )
    metrics = json.loads((run / "eval" / "test" / "metrics.json").read_text())
    (hostile / "eval" / "test").mkdir(parents=True)
    # numbers are typed (a script there is refused at load); every text field is rendered
    metrics.update({"split": script, "data": script, "precision": script})
    metrics["per_class"][script] = metrics["per_class"].pop("CNV")
    (hostile / "eval" / "test" / "metrics.json").write_text(json.dumps(metrics))
    text = write_report([hostile], tmp_path / "report.html").read_text()
    assert "<script" not in text and "<img src=x" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "Content-Security-Policy" in text and "default-src 'none'" in text


def test_the_report_does_not_show_metrics_of_other_data(evaluated, tiny_data, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(tiny_data, other)
    for path in sorted((other / "test" / "DME").iterdir())[1:]:
        path.unlink()  # fewer DME test scans: other data, other numbers
    stored = json.loads((evaluated / "eval" / "test" / "metrics.json").read_text())
    with pytest.warns(DataWarning, match="was computed on other data; the report evaluates"):
        text = write_report([evaluated], tmp_path / "report.html", data=other).read_text()
    assert f"{stored['n']} scans" not in text
    n_other = len(list((other / "test").rglob("*.jpeg")))
    assert f"{n_other} scans" in text
    # the stored evaluation is left as it was
    assert json.loads((evaluated / "eval" / "test" / "metrics.json").read_text()) == stored


@pytest.mark.slow
def test_the_report_refuses_an_audit_of_other_data(evaluated, tiny_data, tmp_path):
    audit_dir = evaluated / "audit" / "test"
    audit_run(evaluated, tiny_data, "test", methods=["gradcam"], steps=2, sanity_scans=2)
    other = tmp_path / "other"
    shutil.copytree(tiny_data, other)
    extra = next((other / "test" / "CNV").iterdir())
    shutil.copy(extra, extra.with_name("CNV-999999-1.jpeg"))  # one more scan: other data
    try:
        with (
            pytest.warns(DataWarning),
            pytest.raises(OctlensError, match=r"audit.json: computed on .*, not on .*other"),
        ):
            write_report([evaluated], tmp_path / "report.html", data=other)
        write_report([evaluated], tmp_path / "same.html", data=tiny_data)  # same data: fine
    finally:
        shutil.rmtree(audit_dir)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"accuracy": 0.9, "n": 3', r"metrics.json: not a readable JSON file"),
        ('{"accuracy": 0.9}', r"metrics.json: not an evaluation this octlens can read \(n: Field"),
        ("[]", r"metrics.json: not an evaluation this octlens can read \(Input should be a"),
    ],
)
def test_truncated_or_foreign_results_are_one_line_errors(run, tmp_path, content, message):
    copy = tmp_path / "run"
    copy.mkdir()
    shutil.copy(run / "best.safetensors", copy / "best.safetensors")
    (copy / "eval" / "test").mkdir(parents=True)
    (copy / "eval" / "test" / "metrics.json").write_text(content)
    with pytest.raises(OctlensError, match=message):
        write_report([copy], tmp_path / "report.html")


def test_report_out_that_is_a_folder_is_refused(run, tmp_path):
    with pytest.raises(OctlensError, match="--out is a folder"):
        write_report([run], tmp_path)


def test_metrics_without_a_data_record_are_recomputed_for_the_report(
    evaluated, tiny_data, tmp_path
):
    copy = tmp_path / "run"
    shutil.copytree(evaluated, copy)
    metrics_path = copy / "eval" / "test" / "metrics.json"
    metrics = json.loads(metrics_path.read_text())
    del metrics["data_fingerprint"]  # as written by octlens before it recorded the data
    metrics["accuracy"] = 0.123456
    metrics_path.write_text(json.dumps(metrics))
    with pytest.warns(DataWarning, match="does not record its data; the report evaluates"):
        text = write_report([copy], tmp_path / "report.html", data=tiny_data).read_text()
    # the accuracy cell holds the recomputed value (another cell may hold 0.123 by chance)
    assert "<th>accuracy</th><td>0.123</td>" not in text
    assert "<th>accuracy</th><td>" in text
