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


def healthy(width: int) -> Lesions:
    zeros = np.zeros(width, dtype=np.float32)
    return Lesions(sub_rpe=zeros, fluid=zeros.copy(), thickening=np.ones(width, dtype=np.float32))


def drusen(rng: np.random.Generator, x: np.ndarray, fovea: float, scale: float) -> Lesions:
    """Several dome-shaped RPE elevations with moderately reflective material beneath."""
    lesions = healthy(len(x))
    for _ in range(rng.integers(3, 8)):
        centre = fovea + rng.uniform(-0.32, 0.32) * len(x)
        bump = _dome(x, centre, rng.uniform(12, 30) * scale, rng.uniform(10, 24) * scale)
        lesions.sub_rpe = np.maximum(lesions.sub_rpe, bump)
    lesions.sub_rpe_reflectivity = rng.uniform(0.32, 0.5)
    return lesions


def cnv(rng: np.random.Generator, x: np.ndarray, fovea: float, scale: float) -> Lesions:
    """A fibrovascular RPE elevation (bright, heterogeneous) with subretinal fluid above it."""
    lesions = healthy(len(x))
    centre = fovea + rng.uniform(-0.18, 0.18) * len(x)
    half_width = rng.uniform(35, 80) * scale
    lesions.sub_rpe = _dome(x, centre, half_width, rng.uniform(20, 55) * scale)
    fluid_centre = centre + rng.uniform(-0.4, 0.4) * half_width
    fluid_width = half_width * rng.uniform(0.8, 1.6)
    lesions.fluid = _dome(x, fluid_centre, fluid_width, rng.uniform(10, 30) * scale)
    lesions.sub_rpe_reflectivity = rng.uniform(0.5, 0.7)
    return lesions


def dme(rng: np.random.Generator, x: np.ndarray, fovea: float, scale: float) -> Lesions:
    """Retinal thickening around the fovea with intraretinal hyporeflective cysts."""
    lesions = healthy(len(x))
    centre = fovea + rng.uniform(-0.12, 0.12) * len(x)
    half_width = rng.uniform(55, 120) * scale
    lesions.thickening = 1.0 + _dome(x, centre, half_width, rng.uniform(0.6, 1.5)).astype(
        np.float32
    )
    for _ in range(rng.integers(3, 9)):
        cx = centre + rng.uniform(-0.75, 0.75) * half_width
        lesions.cysts.append(
            (
                rng.uniform(0.3, 0.75),
                cx,
                rng.uniform(10, 24) * scale,
                rng.uniform(10, 30) * scale,
            )
        )
    return lesions


LESION_MAKERS = {"CNV": cnv, "DME": dme, "DRUSEN": drusen}
