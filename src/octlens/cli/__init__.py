"""The ``octlens`` command: a thin layer over the Python API.

Every command parses options, calls one API function and prints its result. A user error
(:class:`~octlens.errors.OctlensError`, or a usage error such as a bad option value) is printed as
one line, ``error: ...``, with exit status 2; an interrupt (Ctrl-C) as one line with status 130.
"""

from __future__ import annotations

import sys
import types
import warnings

import click
import typer
from rich.console import Console
from rich.markup import escape

from octlens.cli.commands import app, option
from octlens.errors import Interrupted, OctlensError

typer_click: types.ModuleType
try:  # typer >= 0.29 raises its own copy of click's exceptions
    from typer._click import exceptions as typer_click
except ImportError:  # pragma: no cover - older typer uses click itself
    typer_click = click.exceptions

err_console = Console(stderr=True)
_USAGE_ERRORS = (click.exceptions.ClickException, typer_click.ClickException)
_ABORTS = (click.exceptions.Abort, typer.Abort)
_NO_ARGS: tuple[type[Exception], ...] = tuple(
    error
    for module in (click.exceptions, typer_click)
    if (error := getattr(module, "NoArgsIsHelpError", None)) is not None
)
INTERRUPTED = 130


def one_line(text: object) -> str:
    """``text`` with control characters (a newline in a file name) shown as escapes, so a
    message stays on one line, and with rich markup escaped, so a name is printed as it is."""
    shown = "".join(
        char if char.isprintable() else char.encode("unicode_escape").decode("ascii")
        for char in str(text)
    )
    return escape(shown)


def _one_line_warnings(message, category, filename, lineno, file=None, line=None) -> None:
    err_console.print(f"[yellow]warning:[/] {one_line(message)}", highlight=False, soft_wrap=True)


def _fail(message: object, status: int = 2) -> None:
    err_console.print(f"[red]error:[/] {one_line(message)}", highlight=False, soft_wrap=True)
    sys.exit(status)


def main() -> None:
    """Entry point: run the app; user errors and interrupts become one line, not a traceback."""
    warnings.showwarning = _one_line_warnings
    try:
        status = app(standalone_mode=False)
    except Interrupted as error:
        _fail(error.naming(option), INTERRUPTED)
    except OctlensError as error:  # the library names its arguments; the user typed options
        _fail(error.naming(option))
    except OSError as error:  # a full disk or a lost permission while writing a figure
        _fail(f"{error.filename or 'octlens'}: {error.strerror or error}")
    except (KeyboardInterrupt, *_ABORTS):
        _fail("interrupted", INTERRUPTED)
    except ImportError as error:
        # A Ctrl-C inside a compiled module's initialisation (pybind11) arrives as this
        # ImportError with the interrupt as its cause: it is an interrupt, not a broken install.
        if not isinstance(error.__cause__, KeyboardInterrupt):
            raise
        _fail("interrupted", INTERRUPTED)
    except _NO_ARGS as error:
        print(error.ctx.get_help())  # type: ignore[attr-defined]  # click's usage errors
        sys.exit(2)
    except _USAGE_ERRORS as error:
        command = getattr(getattr(error, "ctx", None), "command_path", "octlens")
        _fail(f"{error.format_message()} (see '{command} --help')", error.exit_code)
    if status == INTERRUPTED:  # typer turns an interrupt it catches into this exit status
        _fail("interrupted", INTERRUPTED)
    if isinstance(status, int) and status:
        sys.exit(status)
