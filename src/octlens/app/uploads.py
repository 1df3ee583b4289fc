"""Reading an uploaded scan: the same checks as a scan on disk, and a name safe to show.

An upload is written to a private temporary file under a fixed name (never the name the browser
sent, which may hold ``../`` or HTML), checked and decoded by :mod:`octlens.data.images` exactly as
``octlens evaluate`` decodes a scan, and deleted. Its errors name the upload by its cleaned name.
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from octlens.data.images import (
    MAX_PIXELS,
    UnreadableImageError,
    check_image,
    load_grayscale,
    opened_image,
)
from octlens.data.oct_check import CHECK_SIZE, colour_spread, oct_warnings, shrunk
from octlens.data.retina import find_retina

_UNSAFE = re.compile(r"[^\w.\- ]+")


class UploadError(ValueError):
    """An upload that cannot be scored; the message names it and says why."""


def display_name(name: str | None) -> str:
    """The last path component of ``name`` with anything but letters, digits, ``._- `` replaced,
    at most 80 characters: safe in a log and in a download name (pages still escape it)."""
    last = re.split(r"[\\/]", name or "")[-1]
    cleaned = _UNSAFE.sub("_", last).strip(" .") or "upload"
    return cleaned[:80]


@dataclass
class UploadedScan:
    """A decoded upload: the decodes each model size needs, its retina, and warnings."""

    name: str
    at_size: dict[int, Image.Image]  # grayscale decodes for each model input size
    retina: np.ndarray  # (CHECK_SIZE, CHECK_SIZE) bool, found on the scan shrunk to that size
    not_oct: list[str]  # why it does not look like a B-scan (empty: it does)


def read_upload(data: bytes, name: str | None, sizes: set[int]) -> UploadedScan:
    """Decode ``data`` for models of input ``sizes``; :class:`UploadError` if it cannot be used.

    Every decode is at reduced scale where the format allows (as ``octlens evaluate`` decodes),
    and the retina is found once, on the scan shrunk to the out-of-distribution check's size
    (256 px): the models see 128-224 px, so full resolution would add time, not precision.
    """
    shown = display_name(name)
    if not data:
        raise UploadError(f"{shown}: empty file")
    with tempfile.TemporaryDirectory(prefix="octlens-upload-") as folder:
        path = Path(folder) / "scan"
        path.write_bytes(data)
        try:
            check_image(path, max_pixels=MAX_PIXELS)
            small = shrunk(np.asarray(load_grayscale(path, target_size=CHECK_SIZE)))
            at_size = {size: load_grayscale(path, target_size=size) for size in sorted(sizes)}
            with opened_image(path) as original:
                spread = colour_spread(original)
        except UnreadableImageError as error:
            raise UploadError(str(error).replace(str(path), shown)) from None
    retina = find_retina(small).mask()
    return UploadedScan(shown, at_size, retina, oct_warnings(small, spread, retina))
