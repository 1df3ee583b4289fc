"""The ``octlens`` command: a thin layer over the Python API.

Every command parses options, calls one API function and prints its result. A user error
(:class:`~octlens.errors.OctlensError`) is printed as one line, ``error: ...``, with exit status 2.
"""

from __future__ import annotations

import sys
import warnings

import typer
from click import ClickException
from rich.console import Console

from octlens.cli.commands import app
from octlens.errors import OctlensError

err_console = Console(stderr=True)


def _one_line_warnings(message, category, filename, lineno, file=None, line=None) -> None:
    err_console.print(f"[yellow]warning:[/] {message}", highlight=False, soft_wrap=True)


def main() -> None:
    """Entry point: run the app; user errors become one line, not a traceback."""
    warnings.showwarning = _one_line_warnings
    try:
        app(standalone_mode=False)
    except OctlensError as error:
        err_console.print(f"[red]error:[/] {error}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except (typer.Abort, KeyboardInterrupt):
        err_console.print("aborted")
        sys.exit(130)
    except typer.Exit as exit_:
        sys.exit(exit_.exit_code)
    except ClickException as error:  # usage errors: unknown option, missing argument
        error.show()
        sys.exit(error.exit_code)
