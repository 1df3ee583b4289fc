"""Hyper-parameter search with Optuna: each trial a normal run folder, pruned epoch by epoch.

:func:`tune` samples :func:`suggest`'s search space with TPE, trains each trial with
:func:`~octlens.training.train` into ``OUT/trial-NNN``, reports the validation loss after every
epoch to a pruner (median, or Hyperband) that stops trials worse than their peers at the same
epoch, and minimizes the best epoch's **validation loss** on the patient-disjoint validation
split (the same criterion that picks ``best.safetensors``; the test split is never read).

The study lives in a storage several processes can share. By default it is Optuna's journal file
``OUT/study.journal``: an append-only log with file locks, so workers on one machine (or on a
shared file system) join the same study by running the same command. SQLite is not the default:
its one writer lock makes parallel workers fail with "database is locked" under load, where a
journal file only appends. For workers on many machines, give ``--storage`` a database URL
(``postgresql://user:pass@host/db``; Optuna's RDB storage needs SQLAlchemy and the database's
driver installed). ``--trials N`` is the study's total: each worker stops when N trials have
finished or been pruned, so N workers overshoot by at most N - 1 trials in flight.

At the end ``OUT/best_config.json`` holds the best trial's :class:`TrainConfig` (``octlens train
--config`` takes it; its ``out`` is ``OUT/best``), ``OUT/trials.csv`` every trial (state, value,
epochs reached, settings, run folder), and ``OUT/optimization_history.png`` and
``OUT/param_importances.png`` show the search (``octlens report --tune OUT`` shows them all).
"""

from __future__ import annotations

import csv
import io
import os
import socket
import warnings
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any, cast

import optuna
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from optuna.study import MaxTrialsCallback
from optuna.trial import TrialState
from rich.console import Console

from octlens.data.index import scan
from octlens.errors import Interrupted, OctlensError, arg
from octlens.files import require_writable_folder, write_text
from octlens.models import create_model
from octlens.training.config import TrainConfig
from octlens.training.distributed import from_environment
from octlens.training.loop import train
from octlens.training.storage import database_errors, database_url, journal_storage
from octlens.viz.pyplot import pyplot as plt

PRUNERS = ("median", "hyperband")
JOURNAL = "study.journal"
TRIALS = "trials.csv"


def suggest(trial: optuna.Trial, base: TrainConfig, models: Sequence[str] = ()) -> TrainConfig:
    """``base`` with the searched settings drawn for ``trial``.

    Learning rate 1e-5..1e-2 and weight decay 1e-4..0.3 (log scale), batch size 8/16/32/64,
    label smoothing 0..0.2, augmentation strength 0..2, warm-up 0..3 epochs, and the model among
    ``models`` when more than one is given.
    """
    settings: dict[str, Any] = {
        "lr": trial.suggest_float("lr", 1e-5, 1e-2, log=True),
        "weight_decay": trial.suggest_float("weight_decay", 1e-4, 0.3, log=True),
        "batch_size": trial.suggest_categorical("batch_size", [8, 16, 32, 64]),
        "label_smoothing": trial.suggest_float("label_smoothing", 0.0, 0.2),
        "augment": trial.suggest_float("augment", 0.0, 2.0),
        "warmup_epochs": trial.suggest_float("warmup_epochs", 0.0, 3.0),
    }
    if len(models) > 1:
        settings["model"] = trial.suggest_categorical("model", list(models))
    return base.model_copy(update=settings)


def described(params: dict[str, Any]) -> str:
    """``lr 0.000135, batch_size 64, ...``: a trial's settings on one line."""
    return ", ".join(
        f"{name} {value:.3g}" if isinstance(value, float) else f"{name} {value}"
        for name, value in params.items()
    )


def open_study(out: Path, storage: str | None, pruner: str, name: str = "octlens") -> optuna.Study:
    """The study in ``storage`` (default: the journal file in ``out``), created or joined."""
    if pruner not in PRUNERS:
        raise OctlensError(f"{arg('pruner')} '{pruner}': choose one of {', '.join(PRUNERS)}")
    chosen = (
        optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1)
        if pruner == "median"
        else optuna.pruners.HyperbandPruner(min_resource=1)
    )
    backend: Any = journal_storage(out / JOURNAL) if storage is None else database_url(storage)
    with database_errors(storage) if storage is not None else nullcontext():
        return optuna.create_study(
            study_name=name,
            storage=backend,
            direction="minimize",
            pruner=chosen,
            load_if_exists=True,
        )


def tune(
    base: TrainConfig,
    out: str | Path,
    trials: int,
    storage: str | None = None,
    pruner: str = "median",
    models: Sequence[str] = (),
    verbose: bool = True,
) -> optuna.Study:
    """Run (or join) the study in ``out`` until it holds ``trials`` finished trials; write the
    best config and the figures. ``base`` gives every setting the search does not draw. Each
    trial prints one line (Optuna's own log is kept to errors)."""
    base, models = _checked_search(base, trials, storage, models)
    out = require_writable_folder(Path(out))
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = open_study(out, storage, pruner)
    database = database_errors(storage) if storage is not None else nullcontext()
    done = (TrialState.COMPLETE, TrialState.PRUNED)
    remaining = trials - sum(t.state in done for t in study.trials)  # a second call goes on
    try:
        with warnings.catch_warnings(), database:
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            if remaining > 0:
                study.optimize(
                    _objective(base, models, out),
                    n_trials=remaining,
                    callbacks=[MaxTrialsCallback(trials, states=done), _trial_printer(verbose)],
                    catch=(OctlensError,),  # a diverged trial fails alone
                )
    except KeyboardInterrupt:
        kept = sum(t.state in done for t in study.trials)
        raise Interrupted(
            f"{out}: tuning interrupted; the study keeps its {kept} finished trial(s): run the "
            "same command to go on"
        ) from None
    write_results(study, base, out)
    return study


def _checked_search(
    base: TrainConfig, trials: int, storage: str | None, models: Sequence[str]
) -> tuple[TrainConfig, list[str]]:
    """The base config and the models to search, after every check that can fail before the
    first trial: the trial count, torchrun, the storage URL, the data, each model."""
    if trials < 1:
        raise OctlensError(f"{arg('trials')} {trials}: at least 1")
    if from_environment().active:  # each rank would draw its own trial and wait for the others
        raise OctlensError(
            "octlens tune does not run under torchrun: start one `octlens tune` per GPU "
            f"(CUDA_VISIBLE_DEVICES=K) on the same {arg('out')} or {arg('storage')}, and they "
            "share the study"
        )
    if storage is not None:
        database_url(storage)  # a URL octlens refuses is refused before any folder is made
    index = scan(base.data)  # unreadable data fails here, not once per trial
    models = list(dict.fromkeys(models))
    if len(models) == 1:  # one model is not searched: it is the model of every trial
        base = base.model_copy(update={"model": models[0]})
    check_models(base, models, len(index.classes))
    return base, models


def _objective(base: TrainConfig, models: list[str], out: Path) -> Callable[[optuna.Trial], float]:
    """Train one trial's config in ``out/trial-NNN``; its best validation loss is the value,
    each epoch's loss is reported for pruning."""

    def objective(trial: optuna.Trial) -> float:
        config = suggest(trial, base, models).model_copy(
            update={"out": out / f"trial-{trial.number:03d}"}
        )
        trial.set_user_attr("run", str(config.out))
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")

        def report(row: dict[str, Any]) -> None:
            trial.report(row["val_loss"], row["epoch"])
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned after epoch {row['epoch']}")

        try:
            result = train(config, verbose=False, on_epoch=report)
        except Interrupted as stop:  # Ctrl-C ends the search, it does not fail one trial
            raise KeyboardInterrupt from stop
        except OctlensError as error:  # the trial fails alone (a divergence); it says why
            trial.set_user_attr("error", str(error))
            raise
        return float(result.best["val_loss"])

    return objective


def _trial_printer(verbose: bool) -> Callable[[optuna.Study, optuna.trial.FrozenTrial], None]:
    """The callback that prints one line per finished trial."""
    console = Console(quiet=not verbose, markup=False, highlight=False)

    def said(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        value = "" if trial.value is None else f" val loss {trial.value:.4f}"
        epochs = max(trial.intermediate_values, default=0)
        error = trial.user_attrs.get("error")
        console.print(
            f"trial {trial.number} {trial.state.name.lower()}{value} after {epochs} epoch(s): "
            f"{described(trial.params)}" + (f" ({error})" if error else ""),
            soft_wrap=True,
        )

    return said


def check_models(base: TrainConfig, models: Sequence[str], num_classes: int) -> None:
    """Build every model the search may draw once, with the settings of every trial: an unknown
    name or a setting a model cannot take fails here, in one line, not in each trial."""
    for name in models or [base.model]:
        create_model(
            name,
            num_classes=num_classes,
            img_size=base.img_size,
            patch_size=base.patch_size,
            **base.model_kwargs,
        )


def write_results(study: optuna.Study, base: TrainConfig, out: Path) -> None:
    """``best_config.json`` and the two figures, from every finished trial of the study."""
    finished = [t for t in study.trials if t.state == TrialState.COMPLETE]
    if not finished:
        raise OctlensError(f"{out}: no trial finished (all failed or were pruned)")
    best = min(finished, key=lambda t: t.value if t.value is not None else float("inf"))
    config = base.model_copy(update={**best.params, "out": out / "best"})
    write_text(out / "best_config.json", config.model_dump_json(indent=2))
    names = sorted({name for trial in study.trials for name in trial.params})
    rows = [["trial", "state", "val_loss", "epochs", *names, "run"]]
    for trial in study.trials:
        value = "" if trial.value is None else f"{trial.value:.6g}"
        epochs = max(trial.intermediate_values, default=0)
        params = [str(trial.params.get(name, "")) for name in names]
        rows.append([str(trial.number), trial.state.name.lower(), value, str(epochs), *params,
                     str(trial.user_attrs.get("run", ""))])  # fmt: skip
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    write_text(out / TRIALS, buffer.getvalue())
    from optuna.visualization import matplotlib as plots

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        figures: dict[str, Callable[[optuna.Study], Axes]] = {
            "optimization_history.png": plots.plot_optimization_history
        }
        if len(finished) >= 2 and len(best.params) > 1:
            figures["param_importances.png"] = plots.plot_param_importances
        for name, plot in figures.items():
            figure = cast(Figure, plot(study).figure)
            figure.set_size_inches(7, 4)
            figure.tight_layout()
            figure.savefig(out / name, dpi=110)
            plt.close(figure)
