"""Every reader against junk, every writer against a full disk, every setting against its bounds.

Each case ends in a one-line :class:`OctlensError` naming the file or the setting, or in a value
shown as invalid; never in a traceback, and never in a number computed from junk.
"""

from __future__ import annotations

import json
import resource
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from helpers import run_cli_in_process
from octlens.app.service import run_summary
from octlens.errors import OctlensError
from octlens.evaluate import EvaluationResult, classification_metrics
from octlens.files import read_json
from octlens.models import create_model
from octlens.report import write_report
from octlens.training import TrainConfig, load_checkpoint
from octlens.training.checkpoint import save_checkpoint
from octlens.training.config import MAX_SEED, max_workers
from octlens.training.run import Run

DEEP = 100_000  # levels of nesting: far past Python's recursion limit


def _deep(levels: int = DEEP) -> str:
    return "[" * levels + "]" * levels


def _copy_run(run: Path, folder: Path) -> Path:
    """A run folder holding only ``run``'s best checkpoint, to fill with edited results."""
    folder.mkdir()
    shutil.copy(run / "best.safetensors", folder / "best.safetensors")
    return folder


def _metrics(run: Path) -> dict:
    """A metrics.json as octlens writes it, for the classes of ``run``."""
    classes = load_checkpoint(run).classes
    labels = np.arange(12) % len(classes)
    probs = np.random.default_rng(0).dirichlet(np.ones(len(classes)), size=12)
    provenance = {"checkpoint": str(run / "best.safetensors"), "data": "data", "split": "test"}
    provenance |= {"precision": "fp32", "unreadable": [], "model": "resnet18", "epoch": 1}
    return {**classification_metrics(labels, probs, classes).model_dump(), **provenance}


# --- JSON nested too deep -------------------------------------------------------------------


def test_json_nested_too_deep_is_one_line(tmp_path):
    path = tmp_path / "deep.json"
    path.write_text(_deep())
    with pytest.raises(OctlensError, match=r"deep.json: not a readable JSON file \(nested too"):
        read_json(path)


def test_a_config_nested_too_deep_is_one_line(monkeypatch, capsys, tmp_path):
    config = tmp_path / "config.json"
    config.write_text('{"seed": ' + _deep() + "}")
    status, _, err = run_cli_in_process(monkeypatch, capsys, "train", "--config", str(config))
    assert status == 2 and err.startswith(f"error: {config}: not a readable JSON"), err
    assert err.count("\n") == 1


def test_an_audit_nested_too_deep_is_one_line_in_the_report(tiny_resnet_run, tmp_path):
    run = _copy_run(tiny_resnet_run, tmp_path / "run")
    (run / "audit" / "test").mkdir(parents=True)
    (run / "audit" / "test" / "audit.json").write_text(_deep())
    with pytest.raises(OctlensError, match=r"audit.json: not a readable JSON file") as error:
        write_report([run], tmp_path / "report.html")
    assert "\n" not in str(error.value)


def test_metrics_nested_too_deep_are_a_note_on_the_app_card(tiny_resnet_run, tmp_path):
    run = _copy_run(tiny_resnet_run, tmp_path / "run")
    (run / "eval" / "test").mkdir(parents=True)
    (run / "eval" / "test" / "metrics.json").write_text('{"accuracy": ' + _deep() + "}")
    summary = run_summary(Run.load(run))
    assert "test" not in summary and "nested too deep" in str(summary["test_error"])


def test_a_checkpoint_header_nested_too_deep_is_one_line(tiny_resnet_run, tmp_path):
    source = tiny_resnet_run / "best.safetensors"
    target = tmp_path / "deep.safetensors"
    save_file(load_file(str(source)), target, metadata={"octlens": _deep()})
    with pytest.raises(OctlensError, match=r"deep.safetensors: a safetensors file, but not an"):
        load_checkpoint(target)


# --- a checkpoint write that fails ----------------------------------------------------------


def test_a_checkpoint_over_the_file_size_limit_is_one_line_and_the_old_one_stays(tmp_path):
    path = tmp_path / "last.safetensors"
    meta = {"epoch": 1}
    save_checkpoint(path, nn.Linear(4, 2), meta)
    before = path.read_bytes()
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (len(before) + 4096, hard))  # `ulimit -f`
    try:
        with pytest.raises(OctlensError, match=r"last.safetensors: could not write \(File too"):
            save_checkpoint(path, nn.Linear(400, 200), {"epoch": 2})
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.json", "last.safetensors"]


def test_a_full_disk_under_safetensors_is_one_line(tmp_path, monkeypatch):
    from safetensors import SafetensorError

    from octlens.training import checkpoint as checkpoint_module

    def full(tensors, path, metadata=None):
        Path(path).write_bytes(b"partial")
        raise SafetensorError("Error while serializing: I/O error: No space (os error 28)")

    monkeypatch.setattr(checkpoint_module, "save_file", full)
    with pytest.raises(OctlensError, match=r"x.safetensors: could not write \(no space left"):
        save_checkpoint(tmp_path / "x.safetensors", nn.Linear(2, 2), {"epoch": 1})
    assert list(tmp_path.iterdir()) == []


# --- settings out of bounds -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--seed=-1"], "--seed: Input should be greater than or equal to 0"),
        (["--seed", str(10**23)], "--seed: Input should be less than or equal to"),
        (
            ["--workers", str(max_workers() + 1)],
            f"--workers: Value error, {max_workers() + 1} processes, at most {max_workers()} on",
        ),
        (["--weight-decay", "5000"], "--weight-decay 5000 with --lr 0.001: AdamW multiplies"),
        (["--model-arg", "drop_rate=5"], "model 'resnet18' cannot run with drop_rate=5"),
    ],
)
def test_settings_out_of_bounds_are_one_line_before_the_run_starts(
    monkeypatch, capsys, tiny_data, tmp_path, args, message
):
    out = tmp_path / "run"
    common = ["--data", str(tiny_data), "--out", str(out), "--img-size", "32", "--epochs", "1"]
    status, _, err = run_cli_in_process(monkeypatch, capsys, "train", *common, *args)
    assert status == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert message in err, err
    assert not out.exists()


def test_bounds_in_the_config_itself(tiny_data, tmp_path):
    base = {"data": tiny_data, "out": tmp_path}
    assert TrainConfig(**base, seed=MAX_SEED).seed == MAX_SEED
    for bad in ({"seed": -1}, {"seed": MAX_SEED + 1}, {"seed": 1e23}, {"num_workers": 100_000}):
        with pytest.raises(ValidationError):
            TrainConfig(**base, **bad)
    with pytest.raises(ValidationError, match="lr x weight decay must stay below 1"):
        TrainConfig(**base, lr=0.01, weight_decay=100)
    TrainConfig(**base, num_workers=max_workers(), lr=0.01, weight_decay=99)


@pytest.mark.parametrize(
    ("model", "kwargs", "message"),
    [
        ("resnet18", {"drop_rate": 5}, "cannot run with drop_rate=5 .*dropout probability"),
        ("resnet18", {"drop_path_rate": 5}, "cannot run with drop_path_rate=5"),
        ("vit_tiny", {"drop_path_rate": 5, "depth": 2, "patch_size": 8}, "drop_path_rate=5"),
    ],
)
def test_model_settings_that_fail_only_when_run_are_refused_when_built(model, kwargs, message):
    with pytest.raises(OctlensError, match=message) as error:
        create_model(model, num_classes=4, img_size=32, **kwargs)
    assert "\n" not in str(error.value)


def test_probing_the_model_changes_neither_its_weights_nor_the_random_streams():
    torch.manual_seed(0)
    probed = create_model("resnet18", num_classes=4, img_size=32, drop_rate=0.5)
    after_probe = torch.rand(4)
    torch.manual_seed(0)
    plain = create_model("resnet18", num_classes=4, img_size=32)
    assert torch.equal(after_probe, torch.rand(4))  # the probe's dropout drew nothing here
    for (name, a), (_, b) in zip(
        probed.state_dict().items(), plain.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name  # BatchNorm statistics included: the probe used a copy


# --- metrics.json with values no evaluation gives -------------------------------------------


@pytest.mark.parametrize(
    ("edit", "field", "problem"),
    [
        (lambda m: m.update(accuracy=float("nan")), "accuracy", "finite number"),
        (lambda m: m.update(macro_auc=float("inf")), "macro_auc", "finite number"),
        (lambda m: m.update(ece=-0.25), "ece", "greater than or equal to 0"),
        (lambda m: m["per_class"]["CNV"].update(auc=1.5), "per_class.CNV.auc", "less than or"),
        (lambda m: m.update(n=-3), "n", "greater than or equal to 0"),
        (lambda m: m.update(accuracy="<b>all</b>"), "accuracy", "valid number"),
        (lambda m: m.update(n=True), "n", "valid integer"),
        (lambda m: m.update(shown="yes"), "shown", "Extra inputs"),
    ],
)
def test_metrics_no_evaluation_gives_are_one_line_never_a_number(
    tiny_resnet_run, tmp_path, edit, field, problem
):
    run = _copy_run(tiny_resnet_run, tmp_path / "run")
    metrics = _metrics(run)
    stored = run / "eval" / "test" / "metrics.json"
    stored.parent.mkdir(parents=True)
    stored.write_text(json.dumps(metrics))
    assert EvaluationResult.load(stored).accuracy == metrics["accuracy"]  # the file as written
    edit(metrics)
    stored.write_text(json.dumps(metrics))  # Python writes NaN and Infinity; octlens never does
    expected = f"{stored}: not an evaluation this octlens can read ({field}: "
    with pytest.raises(OctlensError) as error:
        write_report([run], tmp_path / "report.html")
    message = str(error.value)
    assert message.startswith(expected) and problem in message and "\n" not in message
    assert message.endswith("run 'octlens evaluate' again")
    assert not (tmp_path / "report.html").exists()

    summary = run_summary(Run.load(run))
    assert "test" not in summary and str(summary["test_error"]).startswith(expected)


@settings(max_examples=200, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=5),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
        max_leaves=12,
    )
)
def test_reading_any_json_as_an_evaluation_is_one_line(tmp_path_factory, value):
    """A reader of junk must not fail while looking for the junk."""
    path = tmp_path_factory.mktemp("metrics") / "metrics.json"
    for content in (value, {"accuracy": value, "per_class": {"A": value}, "n": value}):
        path.write_text(json.dumps(content))
        with pytest.raises(OctlensError, match=r"^\S*metrics.json: not an evaluation this"):
            EvaluationResult.load(path)


# --- resuming --------------------------------------------------------------------------------


def test_resume_refuses_a_changed_epoch_count_and_config_json_says_what_ran(tiny_data, tmp_path):
    from octlens.training import train

    config = TrainConfig(
        data=tiny_data, out=tmp_path / "run", img_size=32, epochs=2, batch_size=8, num_workers=0
    )

    class Stop(Exception):
        pass

    def stop(row):
        raise Stop

    with pytest.raises(Stop):
        train(config, verbose=False, on_epoch=stop)  # killed after epoch 1 of 2
    for epochs in (1, 5):
        with pytest.raises(
            OctlensError, match=rf"--epochs {epochs}: the run started with --epochs 2"
        ):
            train(config.model_copy(update={"epochs": epochs}), resume=True, verbose=False)
    assert read_json(config.out / "config.json")["epochs"] == 2
    result = train(config, resume=True, verbose=False)
    assert [row["epoch"] for row in result.history] == [1, 2]
    assert read_json(config.out / "config.json")["epochs"] == 2


def _edited(source: Path, target: Path, **changes: object) -> None:
    """A copy of checkpoint ``source`` whose metadata has ``changes`` (None: the key removed)."""
    with safe_open(str(source), framework="pt") as handle:
        meta = json.loads(handle.metadata()["octlens"])
    for key, value in changes.items():
        meta.pop(key) if value is None else meta.update({key: value})
    save_file(load_file(str(source)), target, metadata={"octlens": json.dumps(meta)})


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"history": None}, r"not a checkpoint this run can resume from \(KeyError: 'history'"),
        ({"training_state": {"scheduler": 3}}, r"not a checkpoint this run can resume from"),
        ({"config": [1, 2]}, r"its recorded settings are not valid \(data: Field required"),
    ],
)
def test_resuming_from_an_edited_last_checkpoint_is_one_line(
    tiny_resnet_run, tmp_path, changes, message
):
    from octlens.training import train

    run = tmp_path / "run"
    run.mkdir()
    _edited(tiny_resnet_run / "last.safetensors", run / "last.safetensors", **changes)
    saved = load_checkpoint(tiny_resnet_run / "last.safetensors").meta["config"]
    config = TrainConfig.model_validate({**saved, "out": run, "epochs": saved["epochs"]})
    with pytest.raises(OctlensError, match=message) as error:
        train(config, resume=True, verbose=False)
    assert "\n" not in str(error.value)


def test_a_report_without_data_of_a_run_that_records_none_shows_stored_results(
    tiny_resnet_run, tmp_path
):
    from octlens.report import training_data

    run = tmp_path / "run"
    run.mkdir()
    _edited(tiny_resnet_run / "best.safetensors", run / "best.safetensors", config=None)
    assert training_data([run]) is None
