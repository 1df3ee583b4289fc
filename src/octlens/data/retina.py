"""Find the retina on a B-scan without labels: inner limiting membrane (ILM) to Bruch's membrane.

The shortcut audit needs to know which pixels are retina on scans that have no masks. This is a
small graph-search layer segmentation in the spirit of Chiu et al. (Opt. Express 2010): each
boundary is the left-to-right path through the scan that maximises an edge score, found by dynamic
programming with a bound on how far the path may move between neighbouring columns (continuity).

On a grid coarsened to about 4 x 4 px at 496 rows, after blanking the scanner's white fill and
smoothing:

1. **ILM**: the strongest dark-to-bright *step* (mean intensity of a 12 px window below the row
   minus that of one above), less the tissue already above the row. A wide step ignores the thin
   posterior hyaloid membrane floating in the vitreous (bright, but dark on both sides); the
   tissue penalty rules out the strong edges inside the retina (the ellipsoid zone under the dark
   nuclear layer), which have the inner retina above them, where the ILM has only vitreous.
2. **RPE**: at least 24 px below the ILM, the brightest continuous ridge against its 32 px
   surroundings (the RPE / photoreceptor complex is the most reflective band of a macular OCT).
3. **Bruch's membrane**: within 20 px below the RPE ridge, the strongest bright-to-dark step.

The mask is every pixel between the ILM and Bruch's membrane, minus the scanner's fill and any
burned-in overlay.

**Overlays are not anatomy** (:func:`burned_in_overlays`). Exports carry text, logos, scale bars,
arrows and annotation marks drawn into the pixels; bright, they would pull the ILM onto them and end
up "inside" the retina (a class-coded mark in a corner then never moves in a region swap, see
:mod:`octlens.audit.counterfactual`). What sets them apart from tissue is that they are *drawn*: a
plateau of one gray level (after a 3 x 3 median, which removes JPEG noise and keeps edges) that
stands out sharply from most of what lies 2-4 px around it. OCT tissue is rarely both: speckle
breaks up the plateaus of the layers, and where averaging and compression flatten tissue (the
choroid of wide scans) the surroundings fade into it instead of standing apart. Plateaus darker than
the scan's median + 30 (the black bands and the noise floor) and the saturated registration fill are
not overlays. Ink is drawn in one gray level, so a mark found this way brings the rest of itself
along: plateaus of its level close to it (a glyph over tissue of its own brightness, beside glyphs
over dark background) and pixels of its level connected to it (strokes that JPEG broke into
pieces too small to be plateaus). Each mark is grown by its edge, and overlays are blanked like
the fill before the search, so the boundaries run under them as they would through background.
The thresholds were chosen on the real dev scans (``benchmarks/retina_overlays.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import ndimage

from octlens.data.images import pixel_scale

#: Grid cell size, in pixels of a 496-row scan (scaled with the scan height).
_CELL = 4
#: Most rows (of the coarse grid) a boundary moves between neighbouring columns.
_MAX_JUMP = 2
#: RPE at least this far below the ILM, px at 496 rows (the thinnest foveal retina is thicker).
_MIN_RPE_DEPTH = 24
#: The RPE ridge stands out against the mean of this many rows around it, px at 496 rows.
_RIDGE_WINDOW = 32
#: Bruch's membrane within this far below the RPE ridge, px at 496 rows.
_MAX_BRUCH_DEPTH = 20
#: ILM step window, px at 496 rows: wider than a hyaloid membrane, narrower than the inner retina.
_ILM_WINDOW = 12
#: Pixels this bright or brighter, touching the scan's edge, are the scanner's registration fill.
_FILL_LEVEL = 250
#: Blanked around the fill too, px at 496 rows: JPEG ringing and resampling blur its edge.
_FILL_MARGIN = 6
#: A plateau: 3 x 3 range of the median-filtered scan at most this many gray levels.
_PLATEAU_RANGE = 4
#: An overlay stands out from most of the ring 2-4 px around its plateau by at least this much:
#: its 65th percentile of absolute differences (the median missed mid-gray text over tissue, the
#: 75th carved bright layers out of smooth real retinas; benchmarks/retina_overlays.py).
_OVERLAY_CONTRAST = 30
_RING_PERCENTILE = 65
#: ... and is brighter than the scan's median by at least this (not a black band or noise floor).
_OVERLAY_ABOVE_MEDIAN = 30
#: The ring around a plateau starts this far out, px: the ink's JPEG-blurred edge lies within.
_EDGE = 2
#: A mark standing out by at least this much, or this large (px), is ink beyond doubt, and the
#: rest of its ink is looked for around it. Of the 77 plateaus passing the contrast test on the
#: clean dev scans (tissue), at most 9 are either; most are a few pixels (median 6).
_INK_SEED_CONTRAST = 60
_INK_SEED_SIZE = 24
#: Plateaus within this many gray levels of such ink's level and this close to it (px at 496
#: rows: a glyph's width) are ink too (text over tissue of about its brightness; the benchmark).
_INK_LEVELS = 2
_INK_REACH = 15
#: ... and so are pixels within this many gray levels of the nearest mark's level, connected to it
#: and at most this far from it (px at 496 rows): JPEG leaves no plateau inside short strokes.
_STROKE_LEVELS = 4
_STROKE_REACH = 8


@dataclass(frozen=True)
class RetinaBoundaries:
    """Per-column rows (float, full resolution) of the ILM and Bruch's membrane, and the fill."""

    ilm: np.ndarray  # (W,)
    bruch: np.ndarray  # (W,)
    fill: np.ndarray  # (H, W) bool
    overlay: np.ndarray  # (H, W) bool: burned-in marks

    def mask(self) -> np.ndarray:
        """(H, W) bool: pixels between the ILM and Bruch's membrane, not fill nor overlay."""
        rows = np.arange(self.fill.shape[0], dtype=np.float32)[:, None]
        between = (rows >= self.ilm[None, :]) & (rows <= self.bruch[None, :])
        return between & ~self.fill & ~self.overlay


def find_retina(image: np.ndarray) -> RetinaBoundaries:
    """Boundaries of the retina on one grayscale B-scan ``(H, W)``: uint8, 16-bit detector data
    (10-16 bits), or float in [0, 1] or [0, 255], scaled as :func:`octlens.data.images.pixel_scale`
    scales a file's pixels."""
    if image.ndim != 2:
        raise ValueError(f"expected a grayscale image (H, W), got shape {image.shape}")
    pixels = _gray_levels(image)
    height, width = pixels.shape
    fill = scanner_fill(pixels)
    overlay = _overlays(pixels, fill)

    cell = max(1.0, _CELL * height / 496)
    rows, cols = max(8, round(height / cell)), max(4, round(width / cell))
    # Fill, and the compression ringing along its edge, becomes background (vitreous-dark), so
    # its edge is not mistaken for a boundary.
    margin = max(1, round(_FILL_MARGIN * height / 496))
    blanked = ndimage.binary_dilation(fill | overlay, iterations=margin)
    background = np.percentile(pixels[~blanked], 25) if (~blanked).any() else 0.0
    coarse = _resize(np.where(blanked, background, pixels), rows, cols) / 255
    coarse = ndimage.gaussian_filter(coarse, sigma=(0.7, 1.5))
    to_cells = rows / height  # full-resolution px -> coarse rows
    px = rows / 496  # coarse rows per px of a 496-row scan
    window = max(1, round(_ILM_WINDOW * px))
    below, above = _window_means(coarse, window)
    # Tissue higher up the column (the inner retina above an outer-retina edge) argues against
    # an edge being the ILM: above the ILM there is only dark vitreous. Tissue is what is brighter
    # than halfway from the dark quarter of the scan to its bright tenth.
    dark, bright = np.percentile(coarse, [25, 90])
    tissue = np.cumsum(np.clip(coarse - (dark + bright) / 2, 0, None), axis=0)
    tissue_above = np.vstack([np.zeros((window, cols)), tissue[:-window]])
    ilm = _best_path(below - above - tissue_above, _MAX_JUMP)
    ridge = coarse - ndimage.uniform_filter1d(coarse, max(3, round(_RIDGE_WINDOW * px)), axis=0)
    ridge[_rows(rows) < ilm + _MIN_RPE_DEPTH * px] = -np.inf
    rpe = _best_path(ridge, _MAX_JUMP)
    below, above = _window_means(coarse, 1)
    bruch_score = above - below
    depth = _rows(rows) - rpe
    bruch_score[(depth < 0) | (depth > _MAX_BRUCH_DEPTH * px)] = -np.inf
    bruch = _best_path(bruch_score, _MAX_JUMP)

    # Coarse row r covers full rows [r, r + 1) / to_cells; steps sit between cells r - 1 and r.
    columns = (np.arange(width) + 0.5) * cols / width - 0.5
    return RetinaBoundaries(
        ilm=np.interp(columns, np.arange(cols), ilm / to_cells).astype(np.float32),
        bruch=np.interp(columns, np.arange(cols), bruch / to_cells).astype(np.float32),
        fill=fill,
        overlay=overlay,
    )


def retina_mask(image: np.ndarray) -> np.ndarray:
    """(H, W) bool retina mask of one grayscale B-scan; see :func:`find_retina`."""
    return find_retina(image).mask()


def scanner_fill(pixels: np.ndarray) -> np.ndarray:
    """(H, W) bool: saturated regions touching the border, the white wedges of registration."""
    bright = pixels >= _FILL_LEVEL
    labels, count = ndimage.label(bright)
    if count == 0:
        return bright
    edge_labels = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    return np.isin(labels, edge_labels[edge_labels > 0])


def burned_in_overlays(image: np.ndarray) -> np.ndarray:
    """(H, W) bool: marks drawn into a grayscale scan ``(H, W)`` (any type :func:`find_retina`
    takes): text, logos, scale bars, arrows, flat patches; see the module's docstring."""
    pixels = _gray_levels(image)
    return _overlays(pixels, scanner_fill(pixels))


def _gray_levels(image: np.ndarray) -> np.ndarray:
    """``image`` as float gray levels 0-255, the finder's thresholds' scale. Scaled by its type
    and range, never assumed: 12-bit data multiplied as if in [0, 1] would be all fill."""
    return np.asarray(image, dtype=np.float32) * pixel_scale(np.asarray(image), "scan")


def _overlays(pixels: np.ndarray, fill: np.ndarray) -> np.ndarray:
    """:func:`burned_in_overlays` of gray levels 0-255, the scanner's ``fill`` already found.

    Each candidate plateau (bright enough, not fill) is judged on its own ring, whatever other
    plateaus lie in it: tissue broken into nearby plateaus of one level rings itself with them.
    """
    smooth = ndimage.median_filter(pixels, 3)
    spread = ndimage.maximum_filter(smooth, 3) - ndimage.minimum_filter(smooth, 3)
    labels, count = ndimage.label(spread <= _PLATEAU_RANGE, structure=np.ones((3, 3)))
    overlay = np.zeros(pixels.shape, dtype=bool)
    if count == 0:
        return overlay
    ids = np.arange(1, count + 1)
    levels = ndimage.mean(smooth, labels, ids)
    sizes = ndimage.sum(labels > 0, labels, ids)
    in_fill = np.asarray(ndimage.maximum(fill, labels, ids), dtype=bool)
    floor = np.median(smooth) + _OVERLAY_ABOVE_MEDIAN
    candidates = np.flatnonzero((sizes >= 4) & (levels >= floor) & ~in_fill)
    reach = _EDGE + 3
    # pixels within _EDGE and within reach of a plateau (city-block distance, as 4-connected
    # dilation steps would give), each in one dilation
    near, far = _diamond(_EDGE), _diamond(reach)
    boxes = ndimage.find_objects(labels)
    contrast = np.zeros(count)
    for index in candidates:
        box = tuple(slice(max(0, side.start - reach), side.stop + reach) for side in boxes[index])
        plateau = labels[box] == index + 1
        edge = ndimage.binary_dilation(plateau, structure=near)
        ring = ndimage.binary_dilation(plateau, structure=far) & ~edge
        # The registration fill beside a mark stands apart from it as dark background does.
        difference = np.where(fill[box], 255.0, np.abs(smooth[box] - levels[index]))[ring]
        if len(difference):
            contrast[index] = _percentile(difference, _RING_PERCENTILE)
    marks = contrast >= _OVERLAY_CONTRAST
    if not marks.any():
        return overlay
    marked = np.isin(labels, np.flatnonzero(marks) + 1)
    ink = marks & ((contrast >= _INK_SEED_CONTRAST) | (sizes >= _INK_SEED_SIZE))
    if not ink.any():  # no mark sure enough to follow (nor a distance to measure from)
        return ndimage.binary_dilation(marked, near)
    scale = pixels.shape[0] / 496
    _add_plateaus_of_the_inks_level(labels, levels, ink, candidates, _INK_REACH * scale)
    grown = _add_pixels_of_the_inks_level(smooth, labels, levels, ink, _STROKE_REACH * scale)
    return ndimage.binary_dilation(grown | marked, near)


def _nearest_ink(
    labels: np.ndarray, levels: np.ndarray, inked: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ink plateaus' pixels, and for every pixel its distance to them and their level there."""
    ink = np.isin(labels, np.flatnonzero(inked) + 1)
    distance, nearest = ndimage.distance_transform_edt(~ink, return_indices=True)
    return ink, distance, levels[labels[tuple(nearest)] - 1]


def _add_plateaus_of_the_inks_level(
    labels: np.ndarray,
    levels: np.ndarray,
    inked: np.ndarray,
    candidates: np.ndarray,
    reach: float,
) -> None:
    """Mark as ``inked`` (in place) every candidate plateau of the level of the ink nearest to
    it, at most ``reach`` px away, and so on from the plateaus added, until none is added."""
    pending = candidates[~inked[candidates]]
    while len(pending):
        _, distance, ink_level = _nearest_ink(labels, levels, inked)
        gaps = np.atleast_1d(ndimage.minimum(distance, labels, pending + 1))
        closest = ndimage.minimum_position(distance, labels, pending + 1)
        level_there = np.array([ink_level[position] for position in closest])
        joins = (gaps <= reach) & (np.abs(level_there - levels[pending]) <= _INK_LEVELS)
        if not joins.any():
            return
        inked[pending[joins]] = True
        pending = pending[~joins]


def _add_pixels_of_the_inks_level(
    smooth: np.ndarray, labels: np.ndarray, levels: np.ndarray, inked: np.ndarray, reach: float
) -> np.ndarray:
    """(H, W) bool: the ink plateaus and the pixels of their level connected to them, at most
    ``reach`` px away."""
    ink, distance, ink_level = _nearest_ink(labels, levels, inked)
    alike = (np.abs(smooth - ink_level) <= _STROKE_LEVELS) & (distance <= reach)
    return ndimage.binary_propagation(ink, mask=alike | ink, structure=np.ones((3, 3)))


def _diamond(radius: int) -> np.ndarray:
    offsets = np.abs(np.arange(-radius, radius + 1))
    return (offsets[:, None] + offsets[None, :]) <= radius


def _percentile(values: np.ndarray, percent: float) -> float:
    """``np.percentile(values, percent)`` (linear interpolation) by partial sorting: the audit
    asks it of hundreds of plateaus per scan, where numpy's general machinery dominates."""
    position = percent / 100 * (len(values) - 1)
    low = int(position)
    high = min(low + 1, len(values) - 1)
    parted = np.partition(values, [low, high])
    return float(parted[low] + (position - low) * (parted[high] - parted[low]))


def _resize(pixels: np.ndarray, rows: int, cols: int) -> np.ndarray:
    return np.asarray(Image.fromarray(pixels, mode="F").resize((cols, rows), Image.Resampling.BOX))


def _rows(count: int) -> np.ndarray:
    return np.arange(count, dtype=np.float32)[:, None]


def _window_means(image: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """(H, W) means of ``window`` rows from each row down, and of the ``window`` rows above it.

    Rows with less than a full window on either side see the image continued with its edge rows,
    so a retina touching the top of the scan still has a top boundary.
    """
    padded = np.pad(image, ((window, window), (0, 0)), mode="edge")
    cumulative = np.concatenate([np.zeros((1, image.shape[1])), np.cumsum(padded, axis=0)])
    start = np.arange(image.shape[0]) + window  # index of each row in `padded`
    below = (cumulative[start + window] - cumulative[start]) / window
    above = (cumulative[start] - cumulative[start - window]) / window
    return below.astype(np.float32), above.astype(np.float32)


def _best_path(score: np.ndarray, max_jump: int) -> np.ndarray:
    """Row per column of the left-to-right path with the highest total score.

    Dynamic programming: the best total ending at (row, column) is the score there plus the best
    total in the previous column within ``max_jump`` rows. Returns float rows, one per column.
    """
    height, width = score.shape
    total = score[:, 0].astype(np.float64).copy()
    came_from = np.zeros((height, width), dtype=np.int64)
    rows = np.arange(height)
    # The previous column's totals with -inf beyond its ends: row r's candidates are the window
    # padded[r : r + 2 * max_jump + 1], i.e. rows r - max_jump .. r + max_jump.
    padded = np.full(height + 2 * max_jump, -np.inf)
    windows = np.lib.stride_tricks.sliding_window_view(padded, 2 * max_jump + 1)
    for column in range(1, width):
        padded[max_jump : max_jump + height] = total
        best = windows.argmax(axis=1)
        came_from[:, column] = rows + best - max_jump
        total = windows[rows, best] + score[:, column]
    path = np.empty(width, dtype=np.int64)
    path[-1] = int(np.argmax(total))
    for column in range(width - 1, 0, -1):
        path[column - 1] = came_from[path[column], column]
    return path.astype(np.float32)
