"""Progress bars for long work: counts, rate and time left, on the terminal's stderr.

Every long stage (indexing a folder, synthesis, evaluation, explanations, the audit, the confound
scan) reports through :func:`progress_bar`, so each shows the same columns and obeys the same
rules: bars go to stderr (stdout keeps the results, which may be piped), they are drawn only
when stderr is a terminal and ``verbose`` is true (tests, logs and the web app see nothing), and
they vanish when done. A bar opened while another is showing joins the same display instead of
fighting it for the terminal (rich draws one live display at a time).

Example::

    with progress_bar("explaining", total=len(paths), unit="scans") as advance:
        for batch in batches:
            ...
            advance(len(batch))
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

T = TypeVar("T")
_active: list[Progress] = []  # the display bars join while one is showing


def progress_console() -> Console:
    """Where bars are drawn: stderr, names printed as they are (never as rich markup)."""
    return Console(stderr=True, markup=False, highlight=False)


class Advance:
    """What :func:`progress_bar` yields: call it with the units done; ``describe`` renames the
    bar (the audit names the method and test it is on)."""

    def __init__(self, progress: Progress | None = None, task: TaskID | None = None) -> None:
        self._progress, self._task = progress, task

    def __call__(self, done: int = 1) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.advance(self._task, done)

    def describe(self, description: str) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, description=description)


#: A bar that shows nothing: the default of functions that can advance their caller's bar.
NO_BAR = Advance()


@contextlib.contextmanager
def progress_bar(
    description: str, total: int, unit: str = "scans", verbose: bool = True
) -> Iterator[Advance]:
    """A bar of ``total`` ``unit`` with the count done, the time spent and the time left."""
    if not verbose:
        yield NO_BAR
        return
    if _active:  # a bar is showing: add this one below it, for as long as it runs
        progress = _active[-1]
        task = progress.add_task(description, total=total, unit=unit)
        try:
            yield Advance(progress, task)
        finally:
            progress.remove_task(task)
        return
    console = progress_console()
    if not console.is_terminal:
        yield NO_BAR
        return
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[unit]}"),
        TimeElapsedColumn(),
        TextColumn("spent,"),
        TimeRemainingColumn(),
        TextColumn("left"),
        console=console,
        transient=True,
        # Printing while a bar shows lands above it on a shared terminal; piped to a file,
        # stdout must keep every result rather than have it drawn on stderr's screen.
        redirect_stdout=sys.stdout.isatty(),
    )
    with progress:
        _active.append(progress)
        try:
            task = progress.add_task(description, total=total, unit=unit)
            yield Advance(progress, task)
        finally:
            _active.pop()


def counted(items: Iterable[T], advance: Advance) -> Iterator[T]:
    """``items`` as they are, advancing the bar by one after each is dealt with."""
    for item in items:
        yield item
        advance()
