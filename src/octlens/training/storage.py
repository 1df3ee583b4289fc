"""Where a tuning study lives: Optuna's journal file, checked before it is read, or a database.

**The journal** (``OUT/study.journal``) is one JSON object per line, appended under a file lock.
Optuna skips a line it cannot parse and appends after it, so one damaged line would silently
drop a trial from the replay, and a last line cut short by a kill during an append would be
glued to the next worker's entry and broken for good. :func:`journal_storage` therefore reads
the file under the same lock first: a last line without its newline (the append that never
finished, of a trial that died with it) is cut off with a warning, the intact entries kept (a
whole entry that only lacks its newline is kept and the newline added); any other line that is
not an Optuna entry is a one-line error naming the file and the line.

**A database** is given by URL: ``sqlite:///FILE``, ``postgresql://...`` or ``mysql://...`` (with an
optional ``+driver``); any other scheme (``file://``, ``redis://``) and an in-memory SQLite database
(gone with the process) are refused before anything is opened, and a file that is not a database, a
server that cannot be reached or a driver that is not installed is one line. A URL may hold a
password: every message shows the URL by :func:`redacted`, with ``***`` in its place.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import unquote

import optuna
from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock, JournalStorage
from optuna.storages.journal._storage import JournalOperation  # the operations it replays
from sqlalchemy.exc import SQLAlchemyError

from octlens.errors import OctlensError, arg

#: The databases Optuna's RDB storage keeps a study in (a URL scheme, optionally ``+driver``).
DATABASES = ("sqlite", "postgresql", "mysql")
_OPERATIONS = {int(operation) for operation in JournalOperation}
_QUERY_PASSWORD = re.compile(r"(?i)((?:password|passwd|pwd)=)([^&\s]*)")


def redacted(url: str) -> str:
    """``url`` with its password, if any, shown as ``***``: URLs end up in messages and logs.

    The password is everything between the user's ``:`` and the last ``@`` (a password with an
    unescaped ``@`` or ``/`` is hidden whole), and the value of a ``password=`` query parameter;
    when in doubt more is hidden, never less.
    """
    secret = _password(url)
    shown = url.replace(f":{secret}@", ":***@", 1) if secret else url
    return _QUERY_PASSWORD.sub(r"\1***", shown)


def _password(url: str) -> str:
    """The password of ``url`` as typed (percent-encoded or not), or ``""``."""
    userinfo, at, _ = url.partition("://")[2].rpartition("@")
    return userinfo.partition(":")[2] if at else ""


def _scrubbed(text: str, url: str) -> str:
    """``text`` (a driver's message) with every form of ``url``'s password as ``***``."""
    secrets = [_password(url), *(match.group(2) for match in _QUERY_PASSWORD.finditer(url))]
    for form in {form for secret in secrets for form in (secret, unquote(secret))} - {""}:
        text = text.replace(form, "***")
    return _QUERY_PASSWORD.sub(r"\1***", text)


def database_url(url: str) -> str:
    """``url``, if it names a database Optuna can keep a study in; else a one-line error."""
    typed_scheme, _, rest = url.partition("://")
    scheme = typed_scheme.partition("+")[0].lower()
    if "://" not in url:
        raise OctlensError(
            f"{arg('storage')} '{redacted(url)}': a database URL such as "
            "postgresql://user@host/db or sqlite:///study.db (or leave "
            f"{arg('storage')} out for the journal file in {arg('out')})"
        )
    if scheme not in DATABASES:
        raise OctlensError(
            f"{arg('storage')} {redacted(url)}: '{scheme}' is not a database octlens keeps a "
            "study in; give sqlite:///FILE, postgresql://... or mysql://... (with an optional "
            f"+driver), or leave {arg('storage')} out for the journal file in {arg('out')}"
        )
    if scheme == "sqlite" and _in_memory(rest):
        raise OctlensError(
            f"{arg('storage')} {redacted(url)}: an in-memory SQLite database keeps the study "
            "only while this process runs, apart from every other worker; give sqlite:///FILE"
        )
    return f"{typed_scheme.lower()}://{rest}"  # SQLAlchemy knows its dialects in lower case


def _in_memory(rest: str) -> bool:
    """Whether the part of a ``sqlite://`` URL after ``//`` names no file (``sqlite://``,
    ``sqlite:///``, ``:memory:`` or a ``mode=memory`` URI)."""
    database = rest.removeprefix("/").partition("?")[0]
    return database in ("", ":memory:") or "mode=memory" in rest


@contextmanager
def database_errors(url: str) -> Iterator[None]:
    """Failures of the database behind ``url`` (not a database, unreachable, no driver) as one
    line, the password never shown."""
    try:
        yield
    except ImportError as error:
        raise OctlensError(
            f"{arg('storage')} {redacted(url)}: {error.name or 'its driver'} is not installed "
            "(Optuna's database storage needs SQLAlchemy and the database's driver)"
        ) from None
    except (SQLAlchemyError, optuna.exceptions.StorageInternalError) as error:
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise OctlensError(
            f"{arg('storage')} {redacted(url)}: the study's database cannot be used "
            f"({_scrubbed(first, url)})"
        ) from None


def journal_storage(path: Path) -> JournalStorage:
    """The study journal at ``path`` (created if absent), checked, and repaired if its last
    append was cut short."""
    if path.exists():
        _check_journal(path)
    try:
        return JournalStorage(JournalFileBackend(str(path)))
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as error:
        raise OctlensError(
            f"{path}: Optuna cannot replay this study journal ({type(error).__name__}: {error}); "
            "move it aside to start a new study"
        ) from None


def _check_journal(path: Path) -> None:
    """Cut off a last line cut short (a whole entry only gets its newline); refuse any line that
    is not an Optuna entry.

    The check holds the lock Optuna appends under, so a worker's append in progress is never
    mistaken for a cut one.
    """
    lock = JournalFileSymlinkLock(str(path))
    lock.acquire()
    try:
        try:
            data = path.read_bytes()
        except OSError as error:
            raise OctlensError(f"{path}: the study journal cannot be read ({error})") from None
        *lines, unfinished = data.split(b"\n")
        for number, line in enumerate(lines, start=1):
            if not _is_entry(line):
                raise OctlensError(
                    f"{path}: line {number} is not an Optuna journal entry (damaged or edited); "
                    "the study cannot be read past it: move the file aside to start a new study"
                )
        if unfinished and _is_entry(unfinished):  # whole, but its newline never written
            with open(path, "ab") as handle:
                handle.write(b"\n")
        elif unfinished:
            os.truncate(path, len(data) - len(unfinished))
            warnings.warn(
                f"{path}: its last line was cut short (a worker stopped while writing it); "
                f"removed it and kept the {len(lines)} whole entries",
                stacklevel=3,
            )
    finally:
        lock.release()


def _is_entry(line: bytes) -> bool:
    """Whether ``line`` is one of the operations Optuna's journal replays."""
    try:
        entry = json.loads(line)
    except (ValueError, RecursionError):  # RecursionError: nested too deep to parse
        return False
    operation = entry.get("op_code") if isinstance(entry, dict) else None
    return type(operation) is int and operation in _OPERATIONS
