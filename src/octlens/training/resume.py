"""Resuming a run: which checkpoint continues it, and proof that it is the same run.

A run resumes from ``last`` only with the settings and the training scans it started with
(:data:`RESUMABLE_CHANGES` may differ); anything else is a new run in another folder, so a
second run into the same folder never overwrites the first.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pydantic import ValidationError
from rich.console import Console

from octlens.errors import OctlensError
from octlens.files import first_problem
from octlens.training.checkpoint import Checkpoint, load_checkpoint
from octlens.training.config import TrainConfig

#: Settings that may differ between a run and its resumption; any other change is a new run.
#: ``out`` and ``data`` are compared as places (a moved run, the same data by another path).
#: ``epochs`` is not one: the learning-rate schedule spans the epochs the run started with.
RESUMABLE_CHANGES = {"patience", "num_workers", "device", "out", "data"}
#: Files named by a setting: the same file by another path is the same setting (a manifest
#: edited since changes the carve, which the training fingerprint catches).
_FILE_SETTINGS = {"patients"}


def resumption(config: TrainConfig, resume: bool, console: Console) -> Checkpoint | None:
    """``config.out``'s ``last`` checkpoint when ``resume``, checked against ``config``;
    ``None`` for a new run, which ``out`` must not already hold."""
    out = config.out
    last_path = out / "last.safetensors"
    if out.exists() and not out.is_dir():
        raise OctlensError(f"{out}: --out is a file, not a folder")
    resumed = _load_resumable(last_path, config, console) if resume else None
    if resumed is None and last_path.exists():
        raise OctlensError(f"{out}: holds a run already; add --resume, or choose another --out")
    return resumed


def _load_resumable(last_path: Path, config: TrainConfig, console: Console) -> Checkpoint:
    if not last_path.exists():
        raise OctlensError(f"{last_path}: no checkpoint to resume from")
    checkpoint = load_checkpoint(last_path)
    # The workers are this machine's choice (and bounded by its cores), not the run's.
    settings = checkpoint.meta.get("config")
    recorded = {
        **(settings if isinstance(settings, dict) else {}),
        "num_workers": config.num_workers,
    }
    try:
        saved = TrainConfig.model_validate(recorded)
    except ValidationError as error:
        raise OctlensError(
            f"{last_path}: its recorded settings are not valid ({first_problem(error)}); start "
            "a new run with another --out"
        ) from None
    changed = [
        name
        for name in TrainConfig.model_fields
        if name not in RESUMABLE_CHANGES and _setting(saved, name) != _setting(config, name)
    ]
    if changed == ["epochs"]:
        raise OctlensError(
            f"{last_path}: cannot resume with --epochs {config.epochs}: the run started with "
            f"--epochs {saved.epochs}, and its learning-rate schedule (warm-up, then cosine "
            f"decay to 0 at epoch {saved.epochs}) spans them; resume with --epochs "
            f"{saved.epochs}, or train on from these weights in a new run (--init {last_path} "
            "--out NEW)"
        )
    if changed:
        raise OctlensError(
            f"{last_path}: cannot resume with different settings ({', '.join(changed)}); "
            "start a new run with another --out"
        )
    if saved.out.resolve() != config.out.resolve():
        console.print(f"note: the run was written at {saved.out}; it continues in {config.out}")
    return checkpoint


def _setting(config: TrainConfig, name: str) -> object:
    """A setting as resumption compares it: a file by where it resolves to."""
    value = getattr(config, name)
    return Path(value).resolve() if name in _FILE_SETTINGS and value is not None else value


@contextmanager
def restoring(resumed: Checkpoint) -> Iterator[None]:
    """Restoring a run's state from ``last``: an edited or foreign file (no history, an optimizer
    state of another shape) is one line naming it, not a traceback from torch."""
    try:
        yield
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, RuntimeError) as error:
        first = str(error).splitlines()[0] if str(error) else "invalid value"
        raise OctlensError(
            f"{resumed.path}: not a checkpoint this run can resume from ({type(error).__name__}: "
            f"{first}); start a new run with another --out"
        ) from None


def check_same_data(resumed: Checkpoint, config: TrainConfig, fingerprint: str) -> None:
    """A run resumes only on the training scans it started with, wherever they now are."""
    saved = resumed.meta["config"]["data"]
    recorded = resumed.meta.get("data", {}).get("train_fingerprint")
    same_place = Path(saved).resolve() == Path(config.data).resolve()
    if recorded is None and same_place:  # a run from before fingerprints: trust the path
        return
    if recorded != fingerprint:
        changed = "has changed since" if same_place else "is not the data"
        raise OctlensError(
            f"{config.data}: the training split {changed} this run was trained on "
            f"({saved}); start a new run with another --out"
        )
