"""One synthetic retinal OCT B-scan with its lesion and retina masks.

The scan is built the way the eye is: Bruch's membrane is a tilted, curved line; the retinal
layers are stacked on it with their own thickness and reflectivity (the inner ones thinning into
the foveal pit, the nerve fibre layer thicker on the nasal side); lesions lift or thicken layers
(see :mod:`octlens.data.synth.lesions`); the choroid below has vessel lumens and fades with depth;
retinal vessels cast shadows; speckle reduced by frame averaging (as most OCT2017 scans were
averaged), a fine noise floor and a slight blur make it an OCT image; and, on any class, the
scanner's white registration fill may cut along an edge or a corner.

Sizes are in pixels of a 496 x 512 scan, scaled by the height. A wider scan samples the same
lateral field with more A-scans (as OCT2017's 768 and 1536 px wide scans do), so its geometry is
laid out on the same field and only the sampling is denser.

The intensity statistics (vitreous, speckle, choroid, thickness of the retina relative to the
frame, registration fill) were matched to the real dev scans with
``benchmarks/synthetic_realism.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import ndimage

from octlens.data.index import OCT2017_CLASSES
from octlens.data.synth.lesions import LESION_MAKERS, Lesions, healthy

CLASSES = OCT2017_CLASSES  # the synthetic data has OCT2017's classes, in its order

# Retinal layers from Bruch's membrane up: (name, thickness in px at 496 px high, reflectivity).
# The inner five thin out in the foveal pit and thicken in DME.
_OUTER = (("RPE", 7, 0.92), ("IZ", 4, 0.42), ("EZ", 4, 0.8), ("myoid", 5, 0.26), ("ELM", 2, 0.5))
_ONL = ("ONL", 24, 0.19)
_INNER = (
    ("OPL", 6, 0.5),
    ("INL", 12, 0.26),
    ("IPL", 11, 0.46),
    ("GCL", 12, 0.33),
    ("RNFL", 8, 0.62),
)
# Region ids in image order, top to bottom: vitreous, RNFL ... OPL, ONL, ELM ... IZ, fluid, RPE,
# sub-RPE, choroid.
_VITREOUS, _FLUID, _SUB_RPE, _CHOROID = 0, 11, 13, 14
_INL, _ONL_ID = 4, 6


@dataclass(frozen=True)
class Patient:
    """Anatomy shared by all scans of one synthetic patient."""

    thickness: float
    choroid_decay: float
    nasal_side: int
    pit_width: float
    reflectivity: np.ndarray  # per region, multiplies the nominal values


def draw_patient(rng: np.random.Generator) -> Patient:
    return Patient(
        thickness=rng.uniform(0.62, 0.92),
        choroid_decay=rng.uniform(30, 65),
        nasal_side=int(rng.choice([-1, 1])),
        pit_width=rng.uniform(0.05, 0.09),
        reflectivity=rng.uniform(0.85, 1.15, size=15).astype(np.float32),
    )


@dataclass
class Scan:
    image: np.ndarray  # (H, W) uint8
    lesion: np.ndarray  # (H, W) bool: the pixels of every lesion, empty for NORMAL
    retina: np.ndarray  # (H, W) bool: internal limiting membrane down to Bruch's membrane


def render_scan(
    label: str, patient: Patient, rng: np.random.Generator, height: int = 496, width: int = 512
) -> Scan:
    """Render one scan of class ``label`` (one of :data:`CLASSES`)."""
    if label not in CLASSES:
        raise ValueError(f"unknown class {label!r}; expected one of {CLASSES}")
    scale = height / 496
    span = 512 * scale  # the lateral field, in px of a 512-wide scan
    x = np.linspace(0, span, width, endpoint=False, dtype=np.float32)
    fovea = span / 2 + rng.normal(0, 0.07) * span
    lesions = (
        LESION_MAKERS[label](rng, x, fovea, scale) if label in LESION_MAKERS else healthy(width)
    )

    tops = _layer_tops(x, fovea, height, scale, patient, lesions, rng)
    rows = np.arange(height, dtype=np.float32)[:, None]
    region = (rows >= tops[:, None, :]).sum(axis=0)  # (H, W) region id, see _VITREOUS etc.

    nominal = np.array(
        [
            0.03,
            *[r for _, _, r in _INNER[::-1]],
            _ONL[2],
            *[r for _, _, r in _OUTER[::-1][:-1]],
            0.03,
            _OUTER[0][2],
            lesions.sub_rpe_reflectivity,
            0.0,
        ],
        dtype=np.float32,
    )
    signal = (nominal * patient.reflectivity)[region] * _texture(rng, (height, width), 6.0, 0.15)
    signal[region == _SUB_RPE] *= _texture(rng, (height, width), 2.5, 0.35)[region == _SUB_RPE]
    signal += _choroid(rng, rows, tops[-1], region == _CHOROID, patient.choroid_decay * scale)
    signal *= _streaks(rng, width, region)

    lesion = (region == _SUB_RPE) | (region == _FLUID)
    lesion |= _draw_cysts(signal, region, tops, lesions, rows, x)
    signal *= _vessel_shadows(rng, x, fovea, span, region, scale)
    signal *= 1.0 - 0.3 * rows / height  # spectral-domain roll-off with depth

    image = _to_image(rng, signal, gain=rng.uniform(0.55, 1.0))
    _registration_fill(rng, image)
    retina = (region > _VITREOUS) & (region < _CHOROID)
    return Scan(image=image, lesion=lesion, retina=retina)


def _layer_tops(
    x: np.ndarray,
    fovea: float,
    height: int,
    scale: float,
    patient: Patient,
    lesions: Lesions,
    rng: np.random.Generator,
) -> np.ndarray:
    """(14, W) y of the top of each region below the vitreous; the last row is Bruch's membrane."""
    width = len(x)
    u = (x - fovea) / (512 * scale)
    bruch = (
        rng.uniform(0.38, 0.6) * height
        + rng.uniform(-0.12, 0.14) * (x - fovea)
        - rng.uniform(-0.1, 0.45) * u**2 * height
        + rng.uniform(0, 4) * scale * np.sin(2 * np.pi * (u * rng.uniform(1, 3) + rng.uniform()))
    )
    pit = np.exp(-((u / patient.pit_width) ** 2))
    s = scale * patient.thickness
    inner_scale = (1.0 - 0.95 * pit) * lesions.thickening

    thickness = [lesions.sub_rpe, np.full(width, _OUTER[0][1] * s), lesions.fluid]
    thickness += [np.full(width, t * s) for _, t, _ in _OUTER[1:]]
    thickness.append((_ONL[1] + 14 * pit) * s * lesions.thickening)
    for name, t, _ in _INNER:
        extra = 14 / (1 + np.exp(-patient.nasal_side * u * 25)) if name == "RNFL" else 0
        thickness.append((t + extra) * s * inner_scale)
    # Stack upwards from Bruch's membrane: cumulative thickness gives each region's top.
    tops_upwards = bruch[None, :] - np.cumsum(np.stack(thickness), axis=0)
    return np.concatenate([tops_upwards[::-1], bruch[None, :]]).astype(np.float32)


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Gaussian-smoothed white noise with unit std, made at reduced resolution and upsampled.

    Smoothing at full resolution costs most of a scan's time; noise whose correlation length is
    ``sigma`` px loses nothing visible when drawn on a grid ``sigma / 2`` times coarser.
    """
    step = max(1, int(sigma / 2))
    coarse_shape = (-(-shape[0] // step) + 1, -(-shape[1] // step) + 1)
    coarse = ndimage.gaussian_filter(
        rng.standard_normal(coarse_shape, dtype=np.float32), sigma / step
    )
    upsampled = Image.fromarray(coarse, mode="F").resize(
        (coarse_shape[1] * step, coarse_shape[0] * step), Image.Resampling.BILINEAR
    )
    field = np.asarray(upsampled)[: shape[0], : shape[1]]
    return field / (field.std() + 1e-6)


def _texture(rng: np.random.Generator, shape: tuple[int, int], sigma: float, amount: float):
    """Smooth multiplicative texture around 1 (tissue inhomogeneity)."""
    return 1.0 + amount * _smooth_noise(rng, shape, sigma)


def _choroid(rng, rows, bruch, inside, decay):
    """Choriocapillaris, stroma with dark vessel lumens in a band under Bruch's membrane, and the
    signal fading with depth below it."""
    depth = np.clip(rows - bruch[None, :], 0, None)
    lumens = (_smooth_noise(rng, inside.shape, 5.0) < -0.4) & (depth < 2.2 * decay)
    stroma = np.where(depth < 3, 0.6, np.where(lumens, 0.22, 0.42))
    return np.where(inside, stroma * np.exp(-depth / (1.3 * decay)), 0.0)


def _streaks(rng, width: int, region: np.ndarray) -> np.ndarray:
    """Vertical streaks below the retina: light let through or shadowed column by column."""
    profile = 1.0 + rng.uniform(0.05, 0.3) * _smooth_noise(rng, (1, width), 1.5)[0]
    return np.where(region == _CHOROID, np.clip(profile, 0.3, 2.0)[None, :], 1.0)


def _draw_cysts(signal, region, tops, lesions, rows, x) -> np.ndarray:
    """Darken the DME cysts in place, clipped to the inner nuclear to outer nuclear layers."""
    mask = np.zeros(signal.shape, dtype=bool)
    for depth, cx, ry, rx in lesions.cysts:
        column = int(np.clip(np.searchsorted(x, cx), 0, len(x) - 1))
        top, bottom = tops[_INL - 1, column], tops[_ONL_ID, column]
        cy = top + depth * (bottom - top)
        inside = ((rows - cy) / ry) ** 2 + ((x[None, :] - cx) / rx) ** 2 < 1.0
        mask |= inside & (region >= _INL) & (region <= _ONL_ID)
    signal[mask] = 0.0
    return mask


def _vessel_shadows(rng, x, fovea, span, region, scale) -> np.ndarray:
    """Retinal vessels: a bright wall in the inner retina and a shadow on everything below."""
    shade = np.ones(len(x), dtype=np.float32)
    for _ in range(rng.integers(2, 6)):
        centre = rng.uniform(0, span)
        if abs(centre - fovea) < 0.08 * span:
            continue
        shade -= rng.uniform(0.3, 0.6) * np.exp(
            -(((x - centre) / (rng.uniform(2, 4) * scale)) ** 2)
        )
    below_vessels = region >= 3
    return np.where(below_vessels, np.clip(shade, 0.2, 1.0)[None, :], 1.0)


def _to_image(rng, signal, gain: float) -> np.ndarray:
    """Averaged speckle grained by one point-spread blur, a fine noise floor, in 8 bits.

    One frame's fully developed speckle has exponentially distributed intensity; the mean of
    ``looks`` registered frames is Gamma-distributed with mean 1 and spread ``1/sqrt(looks)``
    (OCT2017's scanners averaged from a few to dozens of frames). The blur correlates it over a
    pixel or two, as the beam's point-spread function does. The detector's noise floor, which is
    all there is in the vitreous, is not blurred: fine grain around a level that varies by scan.
    """
    looks = np.exp(rng.uniform(np.log(6), np.log(40)))
    speckle = rng.gamma(looks, 1.0 / looks, size=signal.shape).astype(np.float32)
    image = ndimage.gaussian_filter(gain * signal * speckle, (0.7, 1.0))
    floor = 1.0 + 0.45 * rng.standard_normal(size=signal.shape, dtype=np.float32)
    image += rng.uniform(0.02, 0.09) * floor
    return (np.clip(image, 0.0, 1.0) ** 0.9 * 255).astype(np.uint8)


def _registration_fill(rng, image: np.ndarray) -> None:
    """White wedges along the top and bottom edges, as scanners leave after aligning a B-scan.

    Each edge gets one with its own chance; an end of zero depth makes it a corner triangle.
    """
    height, width = image.shape
    rows = np.arange(height)[:, None]
    for at_top, chance in ((True, 0.45), (False, 0.35)):
        if rng.uniform() > chance:
            continue
        left, right = rng.uniform(0, 0.09, size=2) * height * (rng.uniform(size=2) < 0.7)
        edge = np.linspace(left, right, width)[None, :]
        image[rows < edge if at_top else rows >= height - edge] = 255
