"""Does an image look like an OCT B-scan at all? A simple check, so a photo is not silently scored.

A classifier answers for any input; a web app that takes uploads must say when the input is not
what the model was trained on. The check is deliberately simple and documented, not a learned
detector: it reads four things a B-scan has and most other images lack, with thresholds set
outside the range of every real OCT2017 ``dev`` scan and every synthetic scan (measured with the
image shrunk to 256 x 256):

==========================  ====================================  ==========  ==================
test                        what it measures                      warn when   dev scans (range)
==========================  ====================================  ==========  ==================
colour                      mean spread between RGB channels      > 0.04      0 (grayscale)
dark background             share of pixels below 15% brightness  < 0.10      0.14 - 0.80
one thin bright band        share of the image the retina finder  > 0.30      0.10 - 0.26
                            puts between the ILM and Bruch's
band brighter than the      mean inside the band / mean outside   < 0.5       0.65 - 5.5
rest
==========================  ====================================  ==========  ==================

Of 17 scikit-image sample pictures (photographs, text, textures, a fundus photo, a galaxy) it
warns on 16; a checkerboard passes. A scan that passes can still be out of the model's
distribution (another device, another disease): the check catches the gross cases only.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from octlens.data.retina import find_retina

CHECK_SIZE = 256
MAX_COLOUR_SPREAD = 0.04
MIN_DARK_SHARE = 0.10
DARK_LEVEL = 0.15
MAX_BAND_SHARE = 0.30
MIN_BAND_CONTRAST = 0.5


def colour_spread(image: Image.Image) -> float:
    """Mean difference between the brightest and darkest RGB channel, in [0, 1]. An image not
    yet loaded is decoded at reduced scale (JPEG), so a huge upload costs little here."""
    if image.mode in ("L", "LA", "1", "I", "I;16", "I;16B", "I;16L", "F"):
        return 0.0
    image.draft("RGB", (64, 64))  # a JPEG decodes at 1/8 scale; no effect once loaded
    thumbnail = image.convert("RGB")
    thumbnail.thumbnail((64, 64))
    rgb = np.asarray(thumbnail, dtype=np.float32) / 255
    return float((rgb.max(axis=2) - rgb.min(axis=2)).mean())


def shrunk(pixels: np.ndarray) -> np.ndarray:
    """``pixels`` (H, W) uint8 at the check's size, :data:`CHECK_SIZE` square."""
    image = Image.fromarray(pixels).resize((CHECK_SIZE, CHECK_SIZE), Image.Resampling.BILINEAR)
    return np.asarray(image)


def oct_warnings(
    pixels: np.ndarray, spread: float = 0.0, band: np.ndarray | None = None
) -> list[str]:
    """Why the grayscale uint8 ``pixels`` (H, W) do not look like an OCT B-scan (empty: they do).

    ``spread`` is the image's :func:`colour_spread` before it was made grayscale; ``band`` the
    retina found on :func:`shrunk` pixels (``find_retina(shrunk(pixels)).mask()``), when the
    caller has it already.
    """
    small = shrunk(pixels) if pixels.shape != (CHECK_SIZE, CHECK_SIZE) else pixels
    if band is None:
        band = find_retina(small).mask()
    reasons = []
    if spread > MAX_COLOUR_SPREAD:
        reasons.append(f"it is in colour (channel spread {spread:.2f}); OCT B-scans are grayscale")
    dark = float((small < DARK_LEVEL * 255).mean())
    if dark < MIN_DARK_SHARE:
        reasons.append(
            f"only {dark:.0%} of it is dark background; B-scans have at least "
            f"{MIN_DARK_SHARE:.0%} (vitreous and below the choroid)"
        )
    share = float(band.mean())
    if share > MAX_BAND_SHARE:
        reasons.append(
            f"no thin retina band: the band found covers {share:.0%} of it "
            f"(B-scans: at most {MAX_BAND_SHARE:.0%})"
        )
    inside = float(small[band].mean()) if band.any() else 0.0
    outside = float(small[~band].mean()) if (~band).any() else 0.0
    contrast = inside / max(outside, 1.0)
    if contrast < MIN_BAND_CONTRAST:
        reasons.append(f"the band found is darker than its surroundings (ratio {contrast:.2f})")
    return reasons
