"""Burned-in overlays: the marks real OCT exports carry on top of the scan.

Exported B-scans carry text (eye, scan pattern, clinic), logos, scale bars, arrows and other
annotation marks, drawn into the pixels. When such a mark correlates with the label (one clinic's
export style, a grader's arrow on every lesion), a classifier can read it instead of the retina.
This module draws such marks, each of a *kind* and coding one of four classes by its shape, so
the shortcut audit and the retina finder can be tested on them where the answer is known:

=============== ========================================================================
kind            what codes the class
=============== ========================================================================
``square``      a flat square edged in black, its gray level (:data:`SQUARE_LEVELS`)
``text``        a three-character label (:data:`TEXT_CODES`) in a 5 x 7 pixel font
``stripes``     stripes, horizontal, vertical or diagonal one way or the other
``checkerboard`` a checkerboard of 3, 5, 8 or 12 cells to the side
``logo``        a disc, a ring, a triangle or a plus sign
``scalebar``    a scale bar with end ticks, 40, 60, 80 or 100% of the mark's width long
``arrow``       an arrow pointing right, down, left or up
=============== ========================================================================

Every mark but the square is drawn in one gray level (default :data:`BRIGHT`, below the
scanner-fill level so it is not taken for registration fill) over the scan, so the class is in
the shape, not the brightness. A mark fills a box of :data:`MARK_SIZE` of the scan's shorter side,
inset by :data:`MARK_INSET` from the edges at one of :data:`PLACES` (four corners, the middle of
four edges).
"""

from __future__ import annotations

import numpy as np

OVERLAY_KINDS = ("square", "text", "stripes", "checkerboard", "logo", "scalebar", "arrow")
PLACES = (
    "top-left",
    "top-right",
    "bottom-left",
    "bottom-right",
    "left",
    "right",
    "top",
    "bottom",
)
#: Side of a mark's box and its distance from the edges, as shares of the shorter side.
MARK_SIZE = 0.16
MARK_INSET = 0.02
#: The flat square's interior level per class: CNV white, then darker in steps of 60.
SQUARE_LEVELS = (255, 195, 135, 75)
#: Ink of every other kind: bright, yet below the fill level (250) of registration wedges.
BRIGHT = 230
TEXT_CODES = ("ART", "HD5", "IR3", "OCT")
_CHECKER_CELLS = (3, 5, 8, 12)
_SCALEBAR_LENGTHS = (0.4, 0.6, 0.8, 1.0)

#: A 5 x 7 pixel font for the text marks: rows top to bottom, "#" is ink.
_GLYPHS = {
    "A": (" ### ", "#   #", "#   #", "#####", "#   #", "#   #", "#   #"),
    "C": (" ### ", "#   #", "#    ", "#    ", "#    ", "#   #", " ### "),
    "D": ("#### ", "#   #", "#   #", "#   #", "#   #", "#   #", "#### "),
    "H": ("#   #", "#   #", "#   #", "#####", "#   #", "#   #", "#   #"),
    "I": ("#####", "  #  ", "  #  ", "  #  ", "  #  ", "  #  ", "#####"),
    "O": (" ### ", "#   #", "#   #", "#   #", "#   #", "#   #", " ### "),
    "R": ("#### ", "#   #", "#   #", "#### ", "# #  ", "#  # ", "#   #"),
    "T": ("#####", "  #  ", "  #  ", "  #  ", "  #  ", "  #  ", "  #  "),
    "3": ("#### ", "    #", "    #", " ### ", "    #", "    #", "#### "),
    "5": ("#####", "#    ", "#### ", "    #", "    #", "#   #", " ### "),
}


#: The smallest box in which each kind still codes four different classes (the text's 5 x 7
#: glyphs, twelve checkerboard cells of 3 px, stripes of a period above 2 px); the square needs 4.
MIN_SIDE = {kind: 4 if kind == "square" else 36 for kind in OVERLAY_KINDS}


def mark_box(shape: tuple[int, int], place: str) -> tuple[int, int, int]:
    """(top, left, side) of the square box a mark fills at ``place`` on a scan of ``shape``."""
    if place not in PLACES:
        raise ValueError(f"place {place!r}: choose one of {', '.join(PLACES)}")
    height, width = shape
    side = round(MARK_SIZE * min(shape))
    inset = round(MARK_INSET * min(shape))
    vertical, horizontal = _PLACE_ANCHORS[place]
    top = {"top": inset, "middle": (height - side) // 2, "bottom": height - inset - side}
    left = {"left": inset, "middle": (width - side) // 2, "right": width - inset - side}
    return top[vertical], left[horizontal], side


_PLACE_ANCHORS = {
    "top-left": ("top", "left"),
    "top-right": ("top", "right"),
    "bottom-left": ("bottom", "left"),
    "bottom-right": ("bottom", "right"),
    "left": ("middle", "left"),
    "right": ("middle", "right"),
    "top": ("top", "middle"),
    "bottom": ("bottom", "middle"),
}


def draw_overlay(
    image: np.ndarray, kind: str, code: int, place: str = "top-left", level: int = BRIGHT
) -> np.ndarray:
    """Draw the ``kind`` mark coding class ``code`` (0-3) into ``image`` (H, W) uint8 in place,
    its ink at gray ``level`` (the square's levels code its class instead); returns the (H, W)
    bool mask of the pixels it set (its ink). A scan too small for the kind is a ValueError."""
    if kind not in OVERLAY_KINDS:
        raise ValueError(f"overlay kind {kind!r}: choose one of {', '.join(OVERLAY_KINDS)}")
    if not 0 <= code < 4:
        raise ValueError(f"overlay code {code}: must be 0-3")
    top, left, side = mark_box(image.shape[:2], place)
    if side < MIN_SIDE[kind]:
        raise ValueError(
            f"a {kind} mark needs a scan of at least {smallest_scan(kind)} px on its shorter "
            f"side, not {min(image.shape[:2])}"
        )
    ink = np.zeros(image.shape[:2], dtype=bool)
    box = (slice(top, top + side), slice(left, left + side))
    if kind == "square":
        levels = np.zeros((side, side), dtype=np.uint8)
        levels[1:-1, 1:-1] = SQUARE_LEVELS[code]
        image[box] = levels
        ink[box] = True
        return ink
    ink[box] = _PATTERNS[kind](side, code)
    image[ink] = level
    return ink


def smallest_scan(kind: str) -> int:
    """The shorter side a scan needs for a ``kind`` mark to code four classes."""
    return int(np.ceil((MIN_SIDE[kind] - 0.5) / MARK_SIZE))


def _text(side: int, code: int) -> np.ndarray:
    text = TEXT_CODES[code]
    columns = 6 * len(text) - 1  # 5 per glyph and a space between
    scale = max(1, side // columns)
    bitmap = np.hstack(
        [np.array([[c == "#" for c in row] + [False] for row in _GLYPHS[ch]]) for ch in text]
    )[:, :-1]
    strokes = np.kron(bitmap, np.ones((scale, scale), dtype=bool))
    out = np.zeros((side, side), dtype=bool)
    rows, cols = strokes.shape
    top = (side - rows) // 2
    out[top : top + rows, :cols] = strokes[:, :side]
    return out


def _stripes(side: int, code: int) -> np.ndarray:
    rows, cols = np.mgrid[:side, :side]
    position = (rows, cols, rows + cols, rows - cols + side)[code]
    period = max(2, side // 6)
    return (position % period) < period / 2


def _checkerboard(side: int, code: int) -> np.ndarray:
    cell = max(1, side // _CHECKER_CELLS[code])
    rows, cols = np.mgrid[:side, :side]
    return ((rows // cell + cols // cell) % 2) == 0


def _logo(side: int, code: int) -> np.ndarray:
    rows, cols = np.mgrid[:side, :side] + 0.5
    y, x = rows / side - 0.5, cols / side - 0.5  # -0.5 .. 0.5 about the centre
    radius = np.hypot(y, x)
    shapes = (
        radius <= 0.45,
        (radius <= 0.45) & (radius >= 0.28),
        (y <= 0.4) & (np.abs(x) <= (y + 0.45) / 0.85 * 0.45),  # apex up, base at the bottom
        (np.abs(x) <= 0.12) | (np.abs(y) <= 0.12),
    )
    return shapes[code]


def _scalebar(side: int, code: int) -> np.ndarray:
    out = np.zeros((side, side), dtype=bool)
    length = max(3, round(_SCALEBAR_LENGTHS[code] * side))
    thick = max(1, side // 10)
    tick = max(thick + 2, side // 4)
    bottom = side - 1
    out[bottom - thick + 1 : bottom + 1, :length] = True
    out[bottom - tick + 1 : bottom + 1, :thick] = True
    out[bottom - tick + 1 : bottom + 1, length - thick : length] = True
    return out


def _arrow(side: int, code: int) -> np.ndarray:
    rows, cols = np.mgrid[:side, :side] + 0.5
    along, across = cols / side, np.abs(rows / side - 0.5)  # pointing right
    shaft = (along <= 0.6) & (across <= 0.08)
    head = (along > 0.55) & (across <= (1.0 - along) * 1.1)
    right = shaft | head
    return np.rot90(right, k=-code)  # right, down, left, up


_PATTERNS = {
    "text": _text,
    "stripes": _stripes,
    "checkerboard": _checkerboard,
    "logo": _logo,
    "scalebar": _scalebar,
    "arrow": _arrow,
}
