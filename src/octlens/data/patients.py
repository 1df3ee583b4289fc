"""Patient ids for any dataset: a manifest (``--patients CSV``) or a name pattern
(``--patient-pattern REGEX``).

Splits, leakage checks and the confound scan's folds group scans by patient. OCT2017's
``CLASS-PATIENT-N`` names carry one; other data needs to say which scans share a retina, or it is
split scan by scan and near-duplicate B-scans of one eye land on both sides. Two ways:

* a CSV with a header row and columns ``file`` and ``patient`` (others are ignored): ``file`` is
  the scan's path relative to the dataset folder (``train/CNV/scan1.png``), or its bare name when
  that names one scan only;
* a regular expression searched in each scan's path relative to the dataset folder (POSIX
  separators, e.g. ``train/CNV/P-007a_3.png``); its group ``patient``, else its first group, is
  the id: ``--patient-pattern '(P-\\d+[a-z]?)_'``.

An id is 1 to 64 letters, digits, ``.``, ``_`` or ``-`` (``P-007a``): ids are printed in tables
and warnings and written to CSVs, where a newline, a comma or markup would forge or break lines.
Everything wrong with either source is a one-line :class:`~octlens.errors.OctlensError`.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from octlens.errors import OctlensError, arg

MAX_LENGTH = 64
_VALID_ID = re.compile(rf"[A-Za-z0-9][A-Za-z0-9._-]{{0,{MAX_LENGTH - 1}}}")
RULE = f"1 to {MAX_LENGTH} letters, digits, '.', '_' or '-', starting with a letter or digit"


def is_patient_id(text: str) -> bool:
    return _VALID_ID.fullmatch(text) is not None


def shown(text: str, limit: int = 40) -> str:
    """``text`` quoted with escapes (a newline shows as ``\\n``), cut to ``limit`` characters."""
    quoted = repr(text[:limit])
    return quoted + ("..." if len(text) > limit else "")


@dataclass(frozen=True)
class PatientSource:
    """Where patient ids come from: a manifest, a pattern, or (neither) OCT2017's file names."""

    manifest: Path | None = None
    pattern: str | None = None

    def __post_init__(self) -> None:
        if self.manifest is not None and self.pattern is not None:
            raise OctlensError(
                f"give {arg('patients')} CSV or {arg('patient_pattern')} REGEX, not both"
            )
        if self.pattern is not None:
            _compiled(self.pattern)  # a bad pattern fails before any folder is read

    def __bool__(self) -> bool:
        return self.manifest is not None or self.pattern is not None

    def __str__(self) -> str:
        if self.manifest is not None:
            return f"{arg('patients')} {self.manifest}"
        return f"{arg('patient_pattern')} {shown(self.pattern or '')}"

    def assign(self, root: Path, files: list[Path]) -> dict[Path, str]:
        """The patient id of each of ``files`` (scans under ``root``) this source gives; scans
        it gives none are left out (each counts as a patient of its own)."""
        relative = {path: path.relative_to(root).as_posix() for path in files}
        if self.manifest is not None:
            return _from_manifest(self.manifest, root, relative)
        if self.pattern is not None:
            return _from_pattern(self.pattern, root, relative)
        return {}


def _compiled(pattern: str) -> tuple[re.Pattern[str], int | str]:
    """The pattern and its patient group; a pattern that does not compile or has no group is
    a one-line error."""
    try:
        compiled = re.compile(pattern)
    except re.error as error:
        raise OctlensError(
            f"{arg('patient_pattern')} {shown(pattern)}: not a regular expression ({error})"
        ) from None
    if "patient" in compiled.groupindex:
        return compiled, "patient"
    if compiled.groups == 0:
        raise OctlensError(
            f"{arg('patient_pattern')} {shown(pattern)}: has no group; put the patient id in "
            "parentheses, e.g. '(P-\\d+)_'"
        )
    return compiled, 1


def _from_pattern(pattern: str, root: Path, relative: dict[Path, str]) -> dict[Path, str]:
    compiled, group = _compiled(pattern)
    found = {}
    for path, name in relative.items():
        match = compiled.search(name)
        patient = match.group(group) if match else None
        if patient is None:  # no match, or an optional group that did not take part
            continue
        if not is_patient_id(patient):
            raise OctlensError(
                f"{root / name}: {arg('patient_pattern')} gives the patient id {shown(patient)}; "
                f"an id is {RULE}"
            )
        found[path] = patient
    if not found and relative:
        raise OctlensError(
            f"{arg('patient_pattern')} {shown(pattern)} matches no scan of {root} (e.g. "
            f"{next(iter(relative.values()))}); it is searched in each path under the data folder"
        )
    return found


def _from_manifest(manifest: Path, root: Path, relative: dict[Path, str]) -> dict[Path, str]:
    by_name: dict[str, list[Path]] = {}
    for scan in relative:
        by_name.setdefault(scan.name, []).append(scan)
    by_relative = {name: scan for scan, name in relative.items()}
    found: dict[Path, str] = {}
    absent: list[tuple[int, str]] = []
    for line, file, patient in _manifest_rows(manifest):
        key = _normalized(file, root)
        path: Path | None = by_relative.get(key)
        if path is None and "/" not in key:
            candidates = by_name.get(key, [])
            if len(candidates) > 1:
                raise OctlensError(
                    f"{manifest}, line {line}: {shown(file)} names {len(candidates)} scans "
                    f"({relative[candidates[0]]}, {relative[candidates[1]]}); give its path "
                    "under the data folder"
                )
            path = candidates[0] if candidates else None
        if path is None:
            if not _skipped_scan(root, key):
                absent.append((line, file))
            continue
        if found.setdefault(path, patient) != patient:
            raise OctlensError(
                f"{manifest}, line {line}: {relative[path]} is listed again, with patient "
                f"{shown(patient)} after {shown(found[path])}"
            )
    if absent:
        line, file = absent[0]
        raise OctlensError(
            f"{manifest}: {len(absent)} file(s) listed are not readable scans of {root} (e.g. "
            f"{shown(file)} on line {line}); is it the manifest of this data?"
        )
    if not found:
        raise OctlensError(f"{manifest}: lists no scans (a header row 'file,patient', then rows)")
    return found


def _skipped_scan(root: Path, key: str) -> bool:
    """``key`` is a file under ``root`` that the index left out (unreadable, already warned
    about): the manifest describes the data, so such a row is not an error."""
    parts = PurePosixPath(key).parts
    return bool(parts) and ".." not in parts and (root / key).is_file()


def _manifest_rows(manifest: Path) -> Iterable[tuple[int, str, str]]:
    """``(line, file, patient)`` per row of the manifest, each checked."""
    try:
        with open(manifest, encoding="utf-8-sig", newline="") as handle:
            reader = csv.reader(handle)
            columns = _columns(manifest, next(reader, None))
            for row in reader:
                if not any(cell.strip() for cell in row):
                    continue  # blank lines
                yield reader.line_num, *_row(manifest, reader.line_num, row, columns)
    except OSError as error:
        raise OctlensError(
            f"{manifest}: cannot read {arg('patients')} ({error.strerror or error})"
        ) from None
    except UnicodeDecodeError:
        raise OctlensError(f"{manifest}: {arg('patients')} is not UTF-8 text (a CSV)") from None
    except csv.Error as error:
        raise OctlensError(f"{manifest}: not a readable CSV ({error})") from None


def _columns(manifest: Path, header: list[str] | None) -> tuple[int, int]:
    """The positions of the ``file`` and ``patient`` columns in the header row."""
    names = [cell.strip().casefold() for cell in header or []]
    if "file" not in names or "patient" not in names:
        found = ", ".join(shown(cell) for cell in (header or [])[:5]) or "nothing"
        raise OctlensError(
            f"{manifest}: {arg('patients')} needs a header row with columns 'file' and 'patient' "
            f"(found {found})"
        )
    return names.index("file"), names.index("patient")


def _row(manifest: Path, line: int, row: list[str], columns: tuple[int, int]) -> tuple[str, str]:
    if len(row) <= max(columns):
        raise OctlensError(
            f"{manifest}, line {line}: {len(row)} field(s); expected 'file' and 'patient'"
        )
    file, patient = (row[column].strip() for column in columns)
    if not file:
        raise OctlensError(f"{manifest}, line {line}: the file is empty")
    if not is_patient_id(patient):
        raise OctlensError(
            f"{manifest}, line {line}: patient id {shown(patient)} for {shown(file)}; an id is "
            f"{RULE}"
        )
    return file, patient


def _normalized(file: str, root: Path) -> str:
    """A manifest's file as a POSIX path relative to the data folder (``.\\a\\b.png`` ->
    ``a/b.png``; an absolute path under the data folder -> its part under it)."""
    path = PurePosixPath(file.replace("\\", "/"))
    base = PurePosixPath(root.absolute().as_posix())
    if path.is_absolute() and path.is_relative_to(base):
        path = path.relative_to(base)
    return "/".join(part for part in path.parts if part != ".")
