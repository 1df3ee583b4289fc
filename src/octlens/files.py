"""Writing results so that a crash, a kill or a full disk never leaves a half-written file.

Every file octlens writes for later reading (checkpoints, JSON results, CSV manifests) goes
through :func:`atomic_write`: the bytes land in a hidden temporary file beside the target, which
is renamed over it only when complete. A reader therefore sees the old file or the new one, never
a truncated mix. Temporary files left by a killed writer are removed by :func:`remove_stale_temps`
when the next run starts in that folder.
"""

from __future__ import annotations

import errno
import json
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Self, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from octlens.errors import OctlensError

ModelT = TypeVar("ModelT", bound=BaseModel)

_TEMP_SUFFIX = ".octlens-tmp"
# What octlens 0.1 named its checkpoint temporaries (they can be over 100 MB).
_LEGACY_TEMPS = (
    ".best.safetensors.tmp",
    ".last.safetensors.tmp",
    ".best.json.tmp",
    ".last.json.tmp",
)


def atomic_write(path: Path, write: Callable[[str], object]) -> None:
    """Call ``write(temporary_path)``, then rename the temporary file to ``path``.

    On any failure the temporary file is removed and ``path`` is left as it was; an ``OSError``
    (full disk, no permission) becomes a one-line :class:`OctlensError` naming ``path``.
    """
    path = Path(path)
    tmp = _temporary(path.parent, f".{path.name}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(str(tmp))
        os.replace(tmp, path)
    except OSError as error:
        raise OctlensError(f"{path}: could not write ({_reason(error)})") from None
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def write_json(path: Path, value: Any) -> None:
    """``value`` as indented JSON; NaN and infinity are refused, since JSON has no such numbers."""
    write_text(path, json.dumps(value, indent=2, allow_nan=False))


def read_json(path: Path) -> Any:
    """Parse a JSON file written by octlens; a missing, truncated or edited file is one line."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise OctlensError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise OctlensError(f"{path}: not a readable JSON file ({error})") from None
    return parse_json(text, str(path))


def parse_json(text: str | bytes, where: str) -> Any:
    """``text`` as JSON; broken JSON is a one-line error naming ``where``.

    Arrays or objects nested thousands deep exhaust Python's recursion limit inside the parser
    (a ``RecursionError``, not a ``JSONDecodeError``): no octlens file nests so deep, so such a
    file is refused like any other that is not octlens's JSON.
    """
    try:
        return json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise OctlensError(f"{where}: not a readable JSON file ({error})") from None
    except RecursionError:
        raise OctlensError(f"{where}: not a readable JSON file (nested too deep)") from None


def read_model(model: type[ModelT], path: Path, what: str, remedy: str) -> ModelT:
    """A JSON file validated as ``model``; a truncated, edited or older file is one line naming
    the first field that does not fit, and ``remedy``."""
    try:
        return model.model_validate(read_json(path))
    except ValidationError as error:
        raise OctlensError(
            f"{path}: not {what} this octlens can read ({first_problem(error)}); {remedy}"
        ) from None


class Record(BaseModel):
    """A result octlens writes as JSON and reads back (``audit.json``, ``metrics.json``).

    Fields it does not know are refused, and numbers are checked against what they can be, so a
    file that was edited, damaged or written by another version is one line at :meth:`load`,
    never a field silently ignored or a number shown that no computation gave.
    """

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    #: What the file holds and how to get a readable one, for the one-line error of :meth:`load`.
    what: ClassVar[str] = "a result"
    remedy: ClassVar[str] = "compute it again"

    def save(self, path: Path) -> None:
        write_json(path, self.model_dump(mode="json"))

    @classmethod
    def load(cls, path: Path) -> Self:
        return read_model(cls, path, cls.what, cls.remedy)


def first_problem(error: ValidationError) -> str:
    """``field.path: message`` of a validation error's first problem, for a one-line error."""
    first = error.errors()[0]
    where = ".".join(map(str, first["loc"]))
    return f"{where}: {first['msg']}" if where else first["msg"]


def require_writable_folder(folder: Path, what: str = "--out") -> Path:
    """Create ``folder`` if needed and prove that a file can be written in it, before any work.

    A run that fails only when it saves its first result has wasted an epoch; this check makes
    a path that is a file, a read-only folder or a full disk fail at the start.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OctlensError(f"{folder}: {what} is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = _temporary(folder, ".write-check")
        probe.write_bytes(b"octlens")
        probe.unlink()
    except OSError as error:
        raise OctlensError(f"{folder}: {what} is not writable ({_reason(error)})") from None
    return folder


def _temporary(folder: Path, stem: str) -> Path:
    """A temporary file's name in ``folder`` that no other writer uses: ``octlens tune``'s
    workers share a folder and may write the same file at the same moment."""
    return folder / f"{stem}.{uuid.uuid4().hex[:12]}{_TEMP_SUFFIX}"


def remove_stale_temps(folder: Path) -> list[Path]:
    """Delete the temporary files a killed writer left in ``folder``; return what was removed."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    patterns = (f".*{_TEMP_SUFFIX}", *_LEGACY_TEMPS)
    stale = [path for pattern in patterns for path in folder.glob(pattern) if path.is_file()]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def _reason(error: OSError) -> str:
    if error.errno == errno.ENOSPC:
        return "no space left on the disk"
    return error.strerror or type(error).__name__
