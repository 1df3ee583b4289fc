"""Tuning: the search space, trials as run folders, pruning's hook, and workers sharing a study."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import optuna
import pytest
from optuna.storages.journal import JournalFileBackend, JournalStorage
from optuna.trial import FixedTrial, TrialState

from octlens.errors import OctlensError
from octlens.files import read_json
from octlens.report import write_report
from octlens.training import TrainConfig, train
from octlens.training.tune import JOURNAL, suggest, tune


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
    with pytest.raises(OctlensError, match="--trials 0"):
        tune(_base(tiny_data, tmp_path / "b"), tmp_path / "s", trials=0)
    with pytest.raises(OctlensError, match="--pruner 'fast'"):
        tune(_base(tiny_data, tmp_path / "b"), tmp_path / "s", trials=1, pruner="fast")
    with pytest.raises(OctlensError, match="database URL"):
        tune(_base(tiny_data, tmp_path / "b"), tmp_path / "s", trials=1, storage="study.db")


def test_a_database_url_holds_the_study(tiny_data, tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    tune(_base(tiny_data, tmp_path / "b", epochs=1), tmp_path / "s", trials=1, storage=url)
    assert len(optuna.load_study(study_name="octlens", storage=url).trials) == 1
    assert not (tmp_path / "s" / JOURNAL).exists()


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
