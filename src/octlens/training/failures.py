"""What a run says when it stops early: Ctrl-C, a lost torchrun peer, a diverged loss.

Each becomes one line saying where training was and which epochs are saved, so that no work is
lost and the user knows the command that continues it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from octlens.errors import Interrupted, OctlensError
from octlens.training.config import TrainConfig
from octlens.training.distributed import ProcessGroup, Stopped, lost_peer


class NonFiniteLoss(ArithmeticError):
    """The loss became NaN or infinite: the run diverged."""


@dataclass
class Position:
    """Where training is: the finished epochs' history rows and the epoch under way."""

    history: list[dict[str, Any]] = field(default_factory=list)
    epoch: int = 1


@contextmanager
def failures_explained(
    out: Path, config: TrainConfig, group: ProcessGroup, position: Position
) -> Iterator[None]:
    """Ctrl-C, a stopped or lost torchrun peer and a diverged loss, inside the block, as one
    line each (an :class:`~octlens.errors.Interrupted` or :class:`~octlens.errors.OctlensError`)
    naming the epoch and what is saved."""
    history = position.history
    try:
        yield
    except Stopped:
        raise Interrupted(
            f"{out}: stopped {_when(position)} by torchrun (another process of the job "
            f"failed, or the job was cancelled); {saved(history)}" + _relaunch(history)
        ) from None
    except RuntimeError as error:
        if not (group.active and lost_peer(error)):
            raise
        raise OctlensError(
            f"{out}: lost another process of the job {_when(position)} "
            f"({str(error).splitlines()[0]}); {saved(history)}" + _relaunch(history)
        ) from None
    except KeyboardInterrupt:
        raise Interrupted(
            f"{out}: interrupted {_when(position)}; {saved(history)}"
            + ("; add --resume to continue" if history else "")
        ) from None
    except NonFiniteLoss as error:
        raise OctlensError(
            f"{out}: training diverged in epoch {position.epoch} ({error}); {saved(history)}; "
            + _step_settings(config)
        ) from None


def saved(history: list[dict[str, Any]]) -> str:
    """Which epochs a run folder holds."""
    if not history:
        return "no epoch finished, so no checkpoint was written"
    return f"epochs 1-{len(history)} are saved (last.safetensors)"


def _when(position: Position) -> str:
    """ "in epoch N", or "after epoch N" once its row is in the history (saving, or between)."""
    history, epoch = position.history, position.epoch
    if history and history[-1]["epoch"] == epoch:
        return f"after epoch {epoch}"
    return f"in epoch {epoch}"


def _relaunch(history: list[dict[str, Any]]) -> str:
    return "; relaunch the same command with --resume" if history else ""


def _step_settings(config: TrainConfig) -> str:
    """What to lower after a divergence: the settings that size each step, with their values.

    AdamW moves each weight by about ``lr`` (the normalized gradient) and takes ``lr x
    weight_decay`` of it (the decay); with a weight decay above 1 (usual values are 0.01-0.3)
    the decay is the likelier cause, so it is named first.
    """
    rate = f"--lr (now {config.lr:g})"
    decay = (
        f"--weight-decay (now {config.weight_decay:g}: each step removes a share "
        f"{config.lr * config.weight_decay:.2g} of every weight)"
    )
    first, then = (decay, rate) if config.weight_decay > 1 else (rate, decay)
    return f"try a lower {first} or {then}"
