"""Tuning: the search space, trials as run folders, pruning's hook, and workers sharing a study."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import optuna
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from optuna.storages.journal import JournalFileBackend, JournalStorage
from optuna.trial import FixedTrial, TrialState

from octlens.errors import OctlensError
from octlens.files import read_json
from octlens.report import write_report
from octlens.training import TrainConfig, train
from octlens.training.tune import JOURNAL, open_study, suggest, tune


def _base(data, out, **overrides) -> TrainConfig:
    settings = {"img_size": 32, "epochs": 2, "num_workers": 0, "model": "resnet18"}
    return TrainConfig(data=data, out=out, **{**settings, **overrides})


def test_suggest_draws_the_searched_settings_and_keeps_the_rest(tiny_data, tmp_path):
    base = _base(tiny_data, tmp_path / "b", seed=7)
    params = {
        "lr": 3e-4,
        "weight_decay": 0.01,
        "batch_size": 16,
        "label_smoothing": 0.05,
        "augment": 1.5,
        "warmup_epochs": 0.5,
        "model": "vit_tiny",
    }
    config = suggest(FixedTrial(params), base, models=["resnet18", "vit_tiny"])
    assert {key: getattr(config, key) for key in params} == params
    assert config.seed == 7 and config.img_size == 32 and config.data == tiny_data
    TrainConfig.model_validate(config.model_dump())  # a valid config, not just a copy
    assert suggest(FixedTrial(params), base).model == "resnet18"  # one model: not searched


def test_a_callback_exception_stops_training_with_finished_epochs_saved(tiny_data, tmp_path):
    class Stop(Exception):
        pass

    def stop_after_first(row):
        if row["epoch"] == 1:
            raise Stop

    with pytest.raises(Stop):
        train(
            _base(tiny_data, tmp_path / "run", epochs=3), verbose=False, on_epoch=stop_after_first
        )
    assert read_json(tmp_path / "run" / "last.json")["epoch"] == 1


@pytest.mark.slow
def test_tune_runs_trials_as_run_folders_and_the_report_shows_the_study(
    tiny_data, tiny_resnet_run, tmp_path
):
    out = tmp_path / "study"
    study = tune(_base(tiny_data, tmp_path / "unused"), out, trials=3)
    finished = [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == 3
    for trial in finished:
        run = out / f"trial-{trial.number:03d}"
        assert trial.user_attrs["run"] == str(run) and (run / "last.json").is_file()
        if trial.state == TrialState.COMPLETE:  # its value is its run's best validation loss
            best = read_json(run / "best.json")["metrics"]["val_loss"]
            assert trial.value == pytest.approx(best)
    best_config = TrainConfig.model_validate(read_json(out / "best_config.json"))
    assert best_config.out == out / "best" and best_config.lr == study.best_params["lr"]
    assert best_config.img_size == 32
    assert (out / "optimization_history.png").stat().st_size > 1000
    assert (out / "param_importances.png").stat().st_size > 1000
    lines = (out / "trials.csv").read_text().splitlines()
    assert lines[0].startswith("trial,state,val_loss,epochs,") and len(lines) == 4
    # the same command again joins the study, which is complete: no new trial
    assert len(tune(_base(tiny_data, tmp_path / "unused"), out, trials=3).trials) == 3

    page = write_report([tiny_resnet_run], tmp_path / "report.html", tune=out).read_text()
    assert "Hyper-parameter search" in page and "3 trials" in page
    assert page.count("data:image/png;base64,") >= 2 + 1  # the study's figures and the run's
    with pytest.raises(OctlensError, match="not an 'octlens tune' folder"):
        write_report([tiny_resnet_run], tmp_path / "r2.html", tune=tmp_path)


def test_tune_errors_are_one_line(tiny_data, tmp_path):
    with pytest.raises(OctlensError, match=r"^trials 0"):
        tune(_base(tiny_data, tmp_path / "b"), tmp_path / "s", trials=0)
    with pytest.raises(OctlensError, match=r"^pruner 'fast'"):
        tune(_base(tiny_data, tmp_path / "b"), tmp_path / "s", trials=1, pruner="fast")
    with pytest.raises(OctlensError, match="database URL"):
        tune(_base(tiny_data, tmp_path / "b"), tmp_path / "s", trials=1, storage="study.db")


def test_a_database_url_holds_the_study(tiny_data, tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    tune(_base(tiny_data, tmp_path / "b", epochs=1), tmp_path / "s", trials=1, storage=url)
    assert len(optuna.load_study(study_name="octlens", storage=url).trials) == 1
    assert not (tmp_path / "s" / JOURNAL).exists()


@pytest.mark.slow
def test_two_workers_share_one_journal_without_losing_or_duplicating_trials(tiny_data, tmp_path):
    out = tmp_path / "shared"
    command = [
        sys.executable, "-c", "from octlens.cli import main; main()", "tune",
        "--data", str(tiny_data), "--out", str(out), "--trials", "4", "--img-size", "32",
        "--epochs", "1", "--workers", "0",
    ]  # fmt: skip
    workers = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    for worker in workers:
        _, err = worker.communicate(timeout=600)
        assert worker.returncode == 0, err
    storage = JournalStorage(JournalFileBackend(str(out / JOURNAL)))
    study = optuna.load_study(study_name="octlens", storage=storage)
    numbers = sorted(t.number for t in study.trials)
    assert numbers == list(range(len(numbers)))  # none lost, none twice
    finished = [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert 4 <= len(finished) <= 5  # the total, overshot by at most the other worker's trial
    assert len({t.user_attrs["worker"] for t in study.trials}) == 2  # both workers added trials
    folders = sorted(p.name for p in out.glob("trial-*"))
    assert folders == [f"trial-{n:03d}" for n in numbers]
    assert json.loads((out / "best_config.json").read_text())["epochs"] == 1
    assert os.path.getsize(out / JOURNAL) > 0


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("sqlite:///JUNK", r"the study's database cannot be used \(.*file is not a database"),
        ("sqlite:////proc/no/such/study.db", r"cannot be used \(.*unable to open database file"),
        ("file:///etc/passwd", r"'file' is not a database octlens keeps a study in"),
        ("redis://me:hunter2@localhost:6379/0", r"redis://me:\*\*\*@localhost:6379/0: 'redis'"),
        (
            "postgresql://me:hunter2@127.0.0.1:1/db",
            r"^storage postgresql://me:\*\*\*@127.0.0.1:1/db: .*(not installed|cannot be used)",
        ),
        ("study.db", "a database URL such as"),
        ("sqlite://", "an in-memory SQLite database keeps the study only while"),
        ("sqlite:///:memory:", "an in-memory SQLite database"),
    ],
)
def test_storage_urls_are_checked_and_never_show_a_password(tiny_data, tmp_path, url, message):
    junk = tmp_path / "junk.db"
    junk.write_text("not a database\n" * 100)
    url = url.replace("JUNK", str(junk))
    with pytest.raises(OctlensError, match=message) as error:
        tune(_base(tiny_data, tmp_path / "b"), tmp_path / "s", trials=1, storage=url)
    assert "hunter2" not in str(error.value) and "\n" not in str(error.value)
    assert junk.read_text() == "not a database\n" * 100
    if "is not a database octlens" in str(error.value):  # refused before anything is made
        assert not (tmp_path / "s").exists()


def _journal_with_two_trials(out) -> bytes:
    """A study journal as Optuna writes it, with two finished trials; its bytes."""
    out.mkdir(parents=True, exist_ok=True)
    storage = JournalStorage(JournalFileBackend(str(out / JOURNAL)))
    study = optuna.create_study(study_name="octlens", storage=storage)
    study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=2)
    return (out / JOURNAL).read_bytes()


def test_a_journal_cut_short_by_a_kill_is_repaired_not_broken_for_good(tmp_path):
    out = tmp_path / "study"
    whole = _journal_with_two_trials(out)
    (out / JOURNAL).write_bytes(whole + b'{"op_code":4,"worker_id":"a-1","study_id":0,"dat')
    with pytest.warns(UserWarning, match=r"study.journal: its last line was cut short"):
        study = open_study(out, None, "median")
    repaired = (out / JOURNAL).read_bytes()  # joining the study may append entries of its own
    assert repaired.startswith(whole) and len(study.trials) == 2
    assert all(json.loads(line) for line in repaired.splitlines())
    study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=1)
    again = optuna.load_study(
        study_name="octlens", storage=JournalStorage(JournalFileBackend(str(out / JOURNAL)))
    )
    assert [t.state for t in again.trials] == [TrialState.COMPLETE] * 3


def test_a_whole_last_entry_without_its_newline_is_kept(tmp_path):
    """A worker killed between writing a trial's result and its newline: the result is whole,
    so it is kept (a newline added), never cut off with the trial left running for good."""
    out = tmp_path / "study"
    whole = _journal_with_two_trials(out)
    (out / JOURNAL).write_bytes(whole[:-1])
    study = open_study(out, None, "median")
    assert (out / JOURNAL).read_bytes().startswith(whole)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2


def test_a_database_scheme_in_capitals_reaches_sqlalchemy_in_lower_case():
    from octlens.training.storage import database_url

    assert database_url("SQLite:///Study.db") == "sqlite:///Study.db"
    assert database_url("PostgreSQL+psycopg://me@host/db") == "postgresql+psycopg://me@host/db"


@pytest.mark.parametrize(
    "line",
    [b"garbage", b'{"op_code": 99, "worker_id": "a-1"}', b"[]", b"", b"[" * 100_000],
)
def test_a_journal_with_a_damaged_or_unknown_line_is_refused_in_one_line(tmp_path, line):
    out = tmp_path / "study"
    lines = _journal_with_two_trials(out).split(b"\n")
    (out / JOURNAL).write_bytes(b"\n".join([*lines[:3], line, *lines[3:]]))
    before = (out / JOURNAL).read_bytes()
    with pytest.raises(OctlensError, match=r"study.journal: line 4 is not an Optuna journal"):
        open_study(out, None, "median")
    assert (out / JOURNAL).read_bytes() == before  # refused, never appended to


def test_model_names_are_checked_before_the_first_trial(tiny_data, tmp_path):
    with pytest.raises(OctlensError, match="unknown model 'resnet_99'"):
        tune(
            _base(tiny_data, tmp_path / "b"),
            tmp_path / "s",
            trials=2,
            models=["resnet18", "resnet_99"],
        )
    with pytest.raises(OctlensError, match="'resnet18' has no patch size"):
        tune(
            _base(tiny_data, tmp_path / "b", model="vit_tiny", patch_size=8),
            tmp_path / "s",
            trials=2,
            models=["vit_tiny", "resnet18"],
        )
    assert not (tmp_path / "s").exists()  # nothing started


def test_a_trial_that_fails_says_why(tiny_data, tmp_path, monkeypatch, capsys):
    from octlens.training import tune as tune_module

    models = []

    def cannot(config, **_):
        models.append(config.model)
        raise OctlensError(f"{config.out}: the reason this trial failed")

    monkeypatch.setattr(tune_module, "train", cannot)
    base = _base(tiny_data, tmp_path / "b", model="resnet18", patch_size=None)
    with pytest.raises(OctlensError, match="no trial finished"):
        tune(base, tmp_path / "s", trials=1, models=["vit_tiny"])
    out = capsys.readouterr().out
    assert "trial 0 fail" in out and "trial-000: the reason this trial failed" in out, out
    assert models == ["vit_tiny"]  # one model named is the model of every trial


@pytest.mark.parametrize(
    ("url", "shown", "secret"),
    [
        ("postgresql://me:hunter2@db.example/s", "postgresql://me:***@db.example/s", "hunter2"),
        ("postgresql://me:hun@ter2@db.example/s", "postgresql://me:***@db.example/s", "hun@ter2"),
        ("postgresql://me:hun%40ter2@db.example/s", "postgresql://me:***@db.example/s", "hun@ter2"),
        (
            "postgresql://db.example/s?sslmode=x&password=hunter2",
            "postgresql://db.example/s?sslmode=x&password=***",
            "hunter2",
        ),
        ("sqlite:////tmp/a@b/study.db", "sqlite:////tmp/a@b/study.db", None),
    ],
)
def test_a_password_is_never_shown_whatever_its_characters(url, shown, secret):
    from octlens.training.storage import _scrubbed, redacted

    assert redacted(url) == shown
    if secret is not None:  # a driver's message that repeats it is scrubbed too
        assert secret not in _scrubbed(f"the server said: password {secret} is wrong", url)


@settings(max_examples=40, deadline=None)
@given(junk=st.binary(max_size=60), position=st.integers(0, 20), whole_line=st.booleans())
def test_any_junk_in_a_journal_is_repaired_or_one_line(junk, position, whole_line):
    """Bytes written anywhere in a journal, as a whole line or as its unfinished end: joining the
    study works or is one OctlensError, never another exception."""
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "study"
        lines = _journal_with_two_trials(out).split(b"\n")[:-1]
        if whole_line:
            lines.insert(min(position, len(lines)), junk.replace(b"\n", b" "))
            data = b"\n".join(lines) + b"\n"
        else:
            data = b"\n".join(lines) + b"\n" + junk.replace(b"\n", b"")
        (out / JOURNAL).write_bytes(data)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                study = open_study(out, None, "median")
            except OctlensError as error:
                assert "\n" not in str(error)
                return
        assert len(study.trials) == 2
