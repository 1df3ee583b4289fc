"""Lesions of the synthetic B-scans, as geometry: profiles along x and regions in (y, x).

Everything is in pixels of the output image; ``scale`` converts the sizes, chosen for 496-px-high
scans, to other heights. Each function draws its sizes, counts and positions from ``rng``, so
lesions vary from scan to scan and their masks are exact by construction.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Lesions:
    """What a class adds to a healthy retina.

    ``sub_rpe`` lifts the RPE off Bruch's membrane (drusen, CNV) and ``fluid`` lifts the neural
    retina off the RPE (subretinal fluid), both as heights per column; ``thickening`` scales the
    inner retina per column (DME); ``cysts`` are ellipses ``(cy_fraction, cx, ry, rx)`` whose
    centre depth is a fraction of the inner retina's thickness.
    """

    sub_rpe: np.ndarray
    fluid: np.ndarray
    thickening: np.ndarray
    sub_rpe_reflectivity: float = 0.45
    cysts: list[tuple[float, float, float, float]] = field(default_factory=list)


def _dome(x: np.ndarray, centre: float, half_width: float, height: float) -> np.ndarray:
    """A smooth dome: height * (1 - u^2)^1.5 inside |u| < 1, zero outside."""
    u = (x - centre) / half_width
    return height * np.clip(1.0 - u**2, 0.0, None) ** 1.5


def _span(x: np.ndarray) -> float:
    """The lateral field the columns ``x`` sample (their count, for one column per px)."""
    return float(len(x) * (x[1] - x[0])) if len(x) > 1 else 1.0


def healthy(width: int) -> Lesions:
    zeros = np.zeros(width, dtype=np.float32)
    return Lesions(sub_rpe=zeros, fluid=zeros.copy(), thickening=np.ones(width, dtype=np.float32))


def drusen(rng: np.random.Generator, x: np.ndarray, fovea: float, scale: float) -> Lesions:
    """Small dome-shaped RPE elevations, often many, with moderately reflective material
    beneath: most are a few px high, as in OCT2017's DRUSEN scans, a few larger."""
    lesions = healthy(len(x))
    for _ in range(rng.integers(3, 15)):
        centre = fovea + rng.uniform(-0.35, 0.35) * _span(x)
        height = rng.uniform(4, 10) if rng.uniform() < 0.7 else rng.uniform(10, 20)
        bump = _dome(x, centre, height * rng.uniform(1.3, 2.5) * scale, height * scale)
        lesions.sub_rpe = np.maximum(lesions.sub_rpe, bump)
    lesions.sub_rpe_reflectivity = rng.uniform(0.32, 0.5)
    return lesions


def cnv(rng: np.random.Generator, x: np.ndarray, fovea: float, scale: float) -> Lesions:
    """A lumpy, irregular fibrovascular RPE elevation (bright, heterogeneous), mostly with
    subretinal fluid above it and often with intraretinal cysts (CNV is wet in both places)."""
    lesions = healthy(len(x))
    centre = fovea + rng.uniform(-0.2, 0.2) * _span(x)
    half_width = rng.uniform(25, 70) * scale
    elevation = _dome(x, centre, half_width, rng.uniform(8, 45) * scale)
    for _ in range(rng.integers(0, 3)):  # lobes beside the main elevation
        lobe = centre + rng.uniform(-1, 1) * half_width
        size = half_width * rng.uniform(0.3, 0.7), rng.uniform(8, 30) * scale
        elevation = np.maximum(elevation, _dome(x, lobe, *size))
    lesions.sub_rpe = elevation.astype(np.float32)
    if rng.uniform() < 0.9:
        fluid_centre = centre + rng.uniform(-0.5, 0.5) * half_width
        fluid_width = half_width * rng.uniform(0.6, 1.6)
        lesions.fluid = _dome(x, fluid_centre, fluid_width, rng.uniform(6, 25) * scale)
    lesions.sub_rpe_reflectivity = rng.uniform(0.45, 0.9)
    if rng.uniform() < 0.5:
        lesions.cysts = _cysts(rng, centre, half_width, rng.integers(1, 7), scale)
    return lesions


def dme(rng: np.random.Generator, x: np.ndarray, fovea: float, scale: float) -> Lesions:
    """Retinal thickening around the fovea with intraretinal hyporeflective cysts."""
    lesions = healthy(len(x))
    centre = fovea + rng.uniform(-0.12, 0.12) * _span(x)
    half_width = rng.uniform(55, 120) * scale
    lesions.thickening = 1.0 + _dome(x, centre, half_width, rng.uniform(0.6, 2.2)).astype(
        np.float32
    )
    lesions.cysts = _cysts(rng, centre, half_width, rng.integers(4, 18), scale)
    if rng.uniform() < 0.25:  # one large cyst
        size = rng.uniform(25, 40) * scale, rng.uniform(20, 40) * scale
        lesions.cysts.append((0.5, centre, *size))
    if rng.uniform() < 0.25:  # a little subretinal fluid under the fovea
        lesions.fluid = _dome(x, centre, half_width * 0.5, rng.uniform(5, 15) * scale)
    return lesions


def _cysts(rng, centre, half_width, count, scale) -> list[tuple[float, float, float, float]]:
    """Hyporeflective intraretinal cysts around ``centre``, from small to large, mostly taller
    than wide (cystoid spaces bridge the nuclear layers)."""
    return [
        (
            rng.uniform(0.3, 0.75),
            centre + rng.uniform(-0.75, 0.75) * half_width,
            rng.uniform(5, 30) * scale,
            rng.uniform(4, 20) * scale,
        )
        for _ in range(count)
    ]


LESION_MAKERS = {"CNV": cnv, "DME": dme, "DRUSEN": drusen}
