"""The one exception type that reaches users: its message is a complete, one-line diagnosis."""

from __future__ import annotations

import re
from collections.abc import Callable

#: Brackets an argument's name inside a message: NUL, which no path and no command-line value
#: can hold, so a user's value is never read as an argument's name.
_MARK = "\x00"
_ARGUMENT = re.compile(f"{_MARK}([A-Za-z_][A-Za-z0-9_]*){_MARK}")


def arg(name: str) -> str:
    """The argument ``name`` inside an error message: a Python caller reads it as written
    (``batch_size``), the command line as its option (``--batch-size``; see
    :meth:`OctlensError.naming`)."""
    return f"{_MARK}{name}{_MARK}"


class OctlensError(Exception):
    """A problem with the user's input (a file, a folder, a checkpoint, an argument).

    The CLI prints the message alone, without a traceback, so it must name the path and the
    problem, e.g. ``"data/train/CNV: class folder has no images"``. Arguments are named with
    :func:`arg`, so the same error speaks Python to a caller and options to the command line.
    """

    def __str__(self) -> str:
        return self.naming(lambda name: name)

    def naming(self, argument: Callable[[str], str]) -> str:
        """The message with each argument named by ``argument(name)``."""
        message = str(self.args[0]) if self.args else ""
        return _ARGUMENT.sub(lambda match: argument(match[1]), message)


class Interrupted(OctlensError):
    """The user stopped a command (Ctrl-C); the message says what was kept and how to go on."""


def require_positive(**values: int | None) -> None:
    """One-line errors for counts that must be at least 1 (``None`` means "the default")."""
    for name, value in values.items():
        if value is not None and value < 1:
            raise OctlensError(f"{arg(name)} {value}: must be at least 1")
