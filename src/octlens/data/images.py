"""Reading one image file safely: grayscale, bounded in size, and honest about broken files."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from octlens.errors import OctlensError

IMAGE_SUFFIXES = frozenset({".jpeg", ".jpg", ".png", ".tif", ".tiff", ".bmp"})

# Real OCT2017 scans are at most 1536 x 496 (0.8 MP). Anything past 40 MP is not a B-scan and may be
# a decompression bomb, so it is refused before a single pixel is decoded.
MAX_PIXELS = 40_000_000

_JPEG_END = b"\xff\xd9"


class UnreadableImageError(OctlensError):
    """An image file that cannot be used: corrupt, truncated, not an image, or too large."""


def is_image_file(path: Path) -> bool:
    return (
        path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")
    )


def _refuse_oversized(path: Path, image: Image.Image, max_pixels: int) -> None:
    if image.width * image.height > max_pixels:
        raise UnreadableImageError(
            f"{path}: {image.width}x{image.height} pixels is over the {max_pixels:,} limit "
            "(refused as a possible decompression bomb)"
        )


def check_image(path: Path, max_pixels: int = MAX_PIXELS) -> None:
    """Cheap structural check of a file, without decoding its pixels.

    Pillow reads the header (catches non-images and bombs) and ``verify()`` checks PNG chunk CRCs;
    for JPEG, which ``verify()`` does not inspect, a missing end-of-image marker is the signature
    of a truncated download.
    """
    try:
        with Image.open(path) as image:
            _refuse_oversized(path, image, max_pixels)
            image_format = image.format
            image.verify()
    except UnreadableImageError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise UnreadableImageError(f"{path}: not a readable image ({error})") from None
    if image_format == "JPEG":
        with open(path, "rb") as handle:
            handle.seek(-2, 2)
            if handle.read(2) != _JPEG_END:
                raise UnreadableImageError(f"{path}: truncated JPEG (no end-of-image marker)")


def load_grayscale(path: Path, target_size: int | None = None) -> Image.Image:
    """Decode ``path`` as an 8-bit grayscale image.

    ``target_size`` lets a JPEG decode at 1/2, 1/4 or 1/8 scale (DCT scaling) when the image will
    be shrunk anyway: several times faster. A scale is taken if it leaves at least 95% of the
    target size, so a 496 px scan decodes at 124 px for a 128 px model and the final resize
    closes the gap.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                _refuse_oversized(path, image, MAX_PIXELS)
                if target_size is not None and image.format == "JPEG":
                    least = math.ceil(0.95 * target_size)
                    image.draft("L", (least, least))
                return image.convert("L")
    except UnreadableImageError:
        raise
    except (
        UnidentifiedImageError,
        OSError,
        SyntaxError,
        ValueError,
        Image.DecompressionBombWarning,
        Image.DecompressionBombError,
    ) as error:
        raise UnreadableImageError(f"{path}: not a readable image ({error})") from None
