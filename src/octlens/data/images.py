"""Reading one image file safely: grayscale, bounded in size, and honest about broken files.

Pixels reach the model as 8-bit grayscale. Files of other depths are scaled, never clipped:

* 16- and 32-bit integer images (``I;16``, ``I``) are divided by the smallest detector range that
  holds their maximum, 8, 10, 12, 14 or 16 bits (``2**bits - 1``), so 12-bit OCT data stored in a
  16-bit PNG or TIFF looks as it does in an 8-bit export, not nearly white;
* floating-point images are read as ``[0, 1]`` (or ``[0, 255]`` when their maximum is above 1);
  anything else (negative values, NaN, larger ranges) is refused with the range found, since no
  scaling of it can be trusted.

MedMNIST arrays go through the same :func:`to_uint8`.
"""

from __future__ import annotations

import contextlib
import math
import struct
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from octlens.errors import OctlensError

IMAGE_SUFFIXES = frozenset({".jpeg", ".jpg", ".png", ".tif", ".tiff", ".bmp"})
# The only decoders Pillow may use, whatever a file is named: other plugins stay unreachable (an
# EPS named scan.jpeg would otherwise reach Ghostscript, a GIF be scored on its first frame).
FORMATS = ("JPEG", "PNG", "TIFF", "BMP")

# Real OCT2017 scans are at most 1536 x 496 (0.8 MP). Anything past 40 MP is not a B-scan and may be
# a decompression bomb, so it is refused before a single pixel is decoded.
MAX_PIXELS = 40_000_000

_JPEG_END = b"\xff\xd9"
_DETECTOR_BITS = (8, 10, 12, 14, 16)
# What libjpeg paints where a baseline JPEG's data stops early: every missing block decodes to
# mid-grey. A file cut short and given a new end marker decodes "fine" with a flat grey bottom.
_JPEG_FILL = 128
_PIL_ERRORS = (
    UnidentifiedImageError,
    OSError,
    SyntaxError,
    ValueError,
    Image.DecompressionBombError,
    Image.DecompressionBombWarning,
)


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


def check_image(path: Path, max_pixels: int = MAX_PIXELS, decode: bool = False) -> None:
    """Check a file without keeping its pixels.

    Pillow reads the header (catches non-images and bombs) and ``verify()`` checks PNG chunk CRCs;
    for JPEG, which ``verify()`` does not inspect, a missing end-of-image marker is the signature
    of a truncated download. ``decode=True`` (``--strict``) also decodes the image, at reduced
    scale where the format allows, which finds broken compressed data and JPEGs cut short.
    """
    try:
        with opened_image(path) as image:
            _refuse_oversized(path, image, max_pixels)
            image_format = image.format
            image.verify()
    except UnreadableImageError:
        raise
    except _PIL_ERRORS as error:
        raise UnreadableImageError(f"{path}: not a readable image ({error})") from None
    if image_format == "JPEG":
        with open(path, "rb") as handle:
            handle.seek(-2, 2)
            if handle.read(2) != _JPEG_END:
                raise UnreadableImageError(f"{path}: truncated JPEG (no end-of-image marker)")
    if decode:
        load_grayscale(path, target_size=64)


def load_grayscale(path: Path, target_size: int | None = None) -> Image.Image:
    """Decode ``path`` as an 8-bit grayscale image (see the module docstring for other depths).

    ``target_size`` lets a JPEG decode at 1/2, 1/4 or 1/8 scale (DCT scaling) when the image will
    be shrunk anyway: several times faster. A scale is taken if it leaves at least 95% of the
    target size, so a 496 px scan decodes at 124 px for a 128 px model and the final resize
    closes the gap.
    """
    try:
        with opened_image(path) as image:
            _refuse_oversized(path, image, MAX_PIXELS)
            full_height = image.height
            if image.format == "JPEG":
                if target_size is not None:
                    least = math.ceil(0.95 * target_size)
                    image.draft("L", (least, least))
                gray = image.convert("L")
                _refuse_jpeg_fill(path, np.asarray(gray), full_height)
                return gray
            return _to_gray(image, path)
    except UnreadableImageError:
        raise
    except _PIL_ERRORS as error:
        raise UnreadableImageError(f"{path}: not a readable image ({error})") from None


def load_mask(path: Path) -> np.ndarray:
    """A mask file as a boolean array, every non-zero pixel set: a grader's export may mark a
    lesion with 1, 255 or a label number, at any bit depth (a 16-bit mask of 1s, scaled as a
    scan is, would round to zero), and a colour mask with any colour but black. A palette mask
    counts by its indices, the label numbers segmentation datasets store (index 0: background).
    A JPEG mask is cut at half its range instead: lossy compression leaves faint non-zero noise
    all over the background, which would count as lesion."""
    try:
        with opened_image(path) as image:
            _refuse_oversized(path, image, MAX_PIXELS)
            if image.format == "JPEG":
                return np.asarray(image.convert("L")) > 127
            if image.mode not in ("1", "L", "P", "I", "I;16", "F"):
                image = image.convert("RGB")
            pixels = np.asarray(image)
            if pixels.ndim == 3:
                pixels = pixels.max(axis=2)
            return np.asarray(pixels != 0, dtype=bool)
    except UnreadableImageError:
        raise
    except _PIL_ERRORS as error:
        raise UnreadableImageError(f"{path}: not a readable mask ({error})") from None


def to_uint8(array: np.ndarray, source: object) -> np.ndarray:
    """``array`` as uint8 pixels, scaled by its bit depth or float range (:func:`pixel_scale`)."""
    return scaled_to_uint8(array, pixel_scale(array, source))


def scaled_to_uint8(array: np.ndarray, scale: float) -> np.ndarray:
    if array.dtype == np.uint8 and scale == 1.0:
        return array
    return np.rint(array.astype(np.float64) * scale).clip(0, 255).astype(np.uint8)


def pixel_scale(array: np.ndarray, source: object) -> float:
    """The factor that maps ``array``'s values to 0..255, from its type and range.

    One factor serves a whole stack of images (a MedMNIST split), so a dark image in a float
    [0, 255] set is not mistaken for a [0, 1] one. ``source`` names the data in the error for
    values that cannot be scaled honestly.
    """
    if array.dtype == np.uint8:
        return 1.0
    if array.dtype == bool:
        return 255.0
    if array.size == 0:
        raise UnreadableImageError(f"{source}: empty image")
    if np.issubdtype(array.dtype, np.integer):
        low, high = int(array.min()), int(array.max())
        if low < 0:
            raise UnreadableImageError(f"{source}: negative pixel values ({low}..{high})")
        bits = next((bits for bits in _DETECTOR_BITS if high < 2**bits), None)
        if bits is None:
            raise UnreadableImageError(
                f"{source}: pixel values up to {high} exceed 16 bits; rescale to 8 or 16 bits"
            )
        return 255 / (2**bits - 1)
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise UnreadableImageError(f"{source}: pixel values include NaN or infinity")
        low_value, high_value = float(array.min()), float(array.max())
        if low_value < 0 or high_value > 255:
            raise UnreadableImageError(
                f"{source}: floating-point pixels in [{low_value:g}, {high_value:g}]; octlens "
                "reads floats in [0, 1] or [0, 255]"
            )
        return 255.0 if high_value <= 1.0 else 1.0
    raise UnreadableImageError(f"{source}: pixels of type {array.dtype} are not an image")


@contextlib.contextmanager
def opened_image(path: Path) -> Iterator[Image.Image]:
    """``Image.open`` restricted to :data:`FORMATS` and to one frame, with Pillow's bomb warning
    turned into an error, and its other warnings (corrupt EXIF in a TIFF that decodes fine)
    re-issued with the file's name. Every read of a scan goes through here."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(path, formats=FORMATS)
        except UnidentifiedImageError:
            raise UnreadableImageError(
                f"{path}: not a readable image (octlens reads {', '.join(FORMATS)})"
            ) from None
        with image:
            _refuse_frames(path, image)
            yield image
    for warning in caught:
        warnings.warn(f"{path}: {warning.message}", UserWarning, stacklevel=4)


def _refuse_frames(path: Path, image: Image.Image) -> None:
    """A multi-page TIFF or an animated PNG is likely an OCT volume: scoring its first frame
    would answer for a B-scan nobody chose."""
    try:  # a TIFF counts its pages by reading each page's header, which may be damaged
        frames = getattr(image, "n_frames", 1)
    except (*_PIL_ERRORS, EOFError, KeyError, IndexError, TypeError, struct.error) as error:
        raise UnreadableImageError(
            f"{path}: not a readable image (its frames cannot be counted: {error})"
        ) from None
    if frames > 1:
        raise UnreadableImageError(
            f"{path}: {frames} frames (an OCT volume?); give one B-scan per file"
        )


def _to_gray(image: Image.Image, path: Path) -> Image.Image:
    if image.mode.startswith("I") or image.mode == "F":  # high bit depth or float: scale it
        return Image.fromarray(to_uint8(np.asarray(image), path))
    return image.convert("L")


def _refuse_jpeg_fill(path: Path, pixels: np.ndarray, full_height: int) -> None:
    """Refuse a JPEG whose last row of 8x8 blocks is the decoder's flat fill, unless the whole
    image is that flat grey."""
    rows = max(1, math.ceil(8 * pixels.shape[0] / full_height))
    bottom = pixels[-rows:]
    if (bottom == _JPEG_FILL).all() and not (pixels == _JPEG_FILL).all():
        flat = pixels.shape[0] - int(np.flatnonzero((pixels != _JPEG_FILL).any(axis=1))[-1]) - 1
        raise UnreadableImageError(
            f"{path}: truncated JPEG (the bottom {flat * full_height // pixels.shape[0]} rows "
            "are the decoder's flat grey fill)"
        )
