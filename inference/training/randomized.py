"""Domain-randomised subjects: what the reference models are trained on.

A model trained on one simulator's contrast, grid and noise learns that simulator. So
each training subject here draws everything a scanner or a head may change and the
model must not depend on (after SynthSeg/SynthSR, Billot, Iglesias et al.): the MR
contrast — per-tissue intensities from wide ranges or a physical sequence with random
timings, then a random monotone intensity curve —, the grid (pixel spacing 0.5–1.5 mm,
slice thickness 1–6 mm, oblique planes, field of view), blur, bias field, noise, gain
and background level. What defines the contrast is kept: on T1w fat and white matter
are bright, CSF and cortical bone dark; on T2w CSF is bright and white matter darker
than grey. The targets (CT in HU, FLAIR) are the anatomy's own, without the scanner's
artefacts.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import replace

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from inference.geometry import FloatArray, Geometry, Volume
from inference.training.simulate import (
    HEAD_CENTRE_RAS,
    Subject,
    Waves,
    clean_mr,
    ct_image,
    draw_anatomy,
    subject_from,
)
from inference.training.tissues import SEQUENCES, Sequence, Tissue

Ranges = Mapping[str, tuple[float, float]]

T1_INTENSITIES: Ranges = {
    "wm": (1.0, 1.0),
    "gm": (0.45, 0.85),
    "csf": (0.02, 0.35),
    "lesion": (0.35, 0.8),
    "cortical": (0.0, 0.12),
    "fat": (0.8, 1.5),
    "skin": (0.3, 0.8),
    "muscle": (0.25, 0.65),
    "air": (0.0, 0.0),
}
"""T1w intensities relative to white matter; marrow is drawn bright (fatty) or dark."""

T2_INTENSITIES: Ranges = {
    "csf": (1.0, 1.0),
    "gm": (0.3, 0.7),
    "lesion": (0.55, 1.0),
    "cortical": (0.0, 0.08),
    "marrow": (0.2, 0.8),
    "fat": (0.3, 0.95),
    "skin": (0.15, 0.5),
    "muscle": (0.03, 0.15),
    "air": (0.0, 0.0),
}
"""T2w intensities relative to CSF; white matter is drawn darker than grey matter."""

WHOLE_HEAD_MM = 150.0
"""Coverage of a whole-head series along the slice normal."""

PHYSICAL_SHARE = 0.4
"""Share of subjects whose input contrast comes from a signal equation with random
timings rather than from the intensity ranges."""

RELAXATION_SPREAD: Mapping[str, tuple[tuple[float, float], tuple[float, float]]] = {
    "gm": ((0.75, 1.3), (0.8, 1.25)),
    "wm": ((0.75, 1.3), (0.8, 1.25)),
    "csf": ((0.85, 1.15), (0.7, 1.3)),
    "lesion": ((0.75, 1.4), (0.6, 1.8)),
    "marrow": ((0.8, 1.25), (0.8, 1.25)),
    "fat": ((0.8, 1.25), (0.8, 1.25)),
    "skin": ((0.8, 1.25), (0.8, 1.25)),
    "muscle": ((0.8, 1.25), (0.8, 1.25)),
}
"""Factors on T1 and on T2 that each tissue draws apart from the others in a subject of
physical contrast (:func:`varied_tissues`): brain tissues differ between field
strengths, ages and people by a quarter or more, lesions by far more; cortical bone and
air have no MR signal to vary."""


def _log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(np.exp(rng.uniform(np.log(low), np.log(high))))


def _rotation(angles_deg: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    ax, ay, az = np.deg2rad(angles_deg)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return np.asarray(rz @ ry @ rx, dtype=np.float64)


def random_geometry(rng: np.random.Generator, whole_head: bool = False) -> Geometry:
    """Near-axial slices through the head: pixel spacing 0.5–1.5 mm, slice thickness
    1–6 mm, field of view 180–260 mm, oblique by up to 20° in half the draws.

    A training slab holds 5–24 slices at a random level and at most 4 M voxels; a
    ``whole_head`` series covers the head from the skull base to the vertex, as a
    scanner's series does (its pixels coarsened, if need be, to 12 M voxels)."""
    spacing = float(rng.uniform(0.5, 1.5))
    thickness = _log_uniform(rng, 1.0, 6.0)
    fov = float(rng.uniform(180.0, 260.0))
    if whole_head:
        slices = int(np.ceil(WHOLE_HEAD_MM / thickness))
        spacing = max(spacing, fov / np.sqrt(12.0e6 / slices))
    else:
        slices = int(np.clip(round(rng.uniform(40.0, 90.0) / thickness), 5, 24))
    matrix = round(fov / spacing)
    if not whole_head:
        slices = max(5, min(slices, int(4.0e6 // (matrix * matrix))))
    limit = 20.0 if rng.uniform() < 0.5 else 3.0
    axes = _rotation(rng.uniform(-limit, limit, size=3))
    row, column, normal = axes[:, 0], axes[:, 1], axes[:, 2]
    centre = np.array(
        [
            rng.uniform(-8.0, 8.0),
            -HEAD_CENTRE_RAS[1] + rng.uniform(-10.0, 10.0),
            rng.uniform(15.0, 30.0) if whole_head else rng.uniform(-55.0, 75.0),
        ]
    )
    origin = (
        centre
        - row * spacing * (matrix - 1) / 2
        - column * spacing * (matrix - 1) / 2
        - normal * thickness * (slices - 1) / 2
    )
    return Geometry(
        origin=(float(origin[0]), float(origin[1]), float(origin[2])),
        row_direction=(float(row[0]), float(row[1]), float(row[2])),
        column_direction=(float(column[0]), float(column[1]), float(column[2])),
        slice_direction=(float(normal[0]), float(normal[1]), float(normal[2])),
        spacing=(thickness, spacing, spacing),
        shape=(slices, matrix, matrix),
    )


def _drawn(rng: np.random.Generator, ranges: Ranges) -> dict[str, float]:
    return {name: float(rng.uniform(low, high)) for name, (low, high) in ranges.items()}


def t1_intensities(rng: np.random.Generator) -> dict[str, float]:
    """Per-tissue T1w intensities from :data:`T1_INTENSITIES`."""
    values = _drawn(rng, T1_INTENSITIES)
    bright = rng.uniform() < 0.6
    values["marrow"] = float(rng.uniform(0.6, 1.3) if bright else rng.uniform(0.1, 0.45))
    return values


def t2_intensities(rng: np.random.Generator) -> dict[str, float]:
    """Per-tissue T2w intensities from :data:`T2_INTENSITIES`, white matter below grey."""
    values = _drawn(rng, T2_INTENSITIES)
    values["wm"] = values["gm"] * float(rng.uniform(0.6, 0.92))
    return values


def _physical_sequence(rng: np.random.Generator, role: str) -> Sequence:
    """A T1w (spin echo, or inversion-prepared) or T2w spin-echo sequence with random
    timings within the ranges scanners use."""
    if role == "T2":
        return Sequence("T2w", "spin_echo", rng.uniform(2500, 6000), rng.uniform(70, 130))
    if rng.uniform() < 0.5:
        return Sequence("T1w SE", "spin_echo", rng.uniform(350, 750), rng.uniform(6, 20))
    return Sequence(
        "T1w IR",
        "inversion_recovery",
        rng.uniform(1800, 2600),
        rng.uniform(2, 5),
        rng.uniform(700, 1100),
    )


BRAIN_TISSUES = ("gm", "wm", "lesion")
CSF_MARGIN = 1.2
"""What defines the contrast, kept by every physical-contrast input: on T1w CSF darker,
on T2w CSF brighter, than every brain tissue (lesions included) by this factor."""
_TRIES = 20


def csf_margin(signals: Mapping[str, float], role: str) -> float:
    """How far CSF stands from the nearest brain tissue, as a factor (> 1: on the side
    that defines ``role``'s contrast)."""
    csf = signals["csf"]
    if role == "T2":
        return csf / max(max(signals[name] for name in BRAIN_TISSUES), 1e-9)
    return min(signals[name] for name in BRAIN_TISSUES) / max(csf, 1e-9)


def _physical_signals(
    rng: np.random.Generator, role: str, tissues: Mapping[str, Tissue]
) -> dict[str, float]:
    """Tissue signals of a random sequence of ``role`` that keeps CSF where the contrast
    puts it (:data:`CSF_MARGIN`): timings are drawn again until one does, and after
    :data:`_TRIES` the draw that came nearest is kept (tissues no timing can separate)."""
    best: dict[str, float] = {}
    for _ in range(_TRIES):
        sequence = _physical_sequence(rng, role)
        signals = {name: sequence.signal(t) for name, t in tissues.items()}
        if not best or csf_margin(signals, role) > csf_margin(best, role):
            best = signals
        if csf_margin(best, role) >= CSF_MARGIN:
            break
    return best


def _tissue_signals(
    rng: np.random.Generator, role: str, tissues: Mapping[str, Tissue]
) -> dict[str, float]:
    if rng.uniform() < PHYSICAL_SHARE:
        spread = {
            name: replace(
                t, t1_ms=t.t1_ms * rng.uniform(0.8, 1.2), t2_ms=t.t2_ms * rng.uniform(0.8, 1.2)
            )
            for name, t in tissues.items()
        }
        sequence = _physical_sequence(rng, role)
        return {name: sequence.signal(t) for name, t in spread.items()}
    return t1_intensities(rng) if role == "T1" else t2_intensities(rng)


def varied_tissues(rng: np.random.Generator, tissues: Mapping[str, Tissue]) -> dict[str, Tissue]:
    """The subject's tissues with relaxation times drawn wide, each tissue apart
    (:data:`RELAXATION_SPREAD`), and proton densities within ±10 %; grey matter keeps a
    longer T1 and T2 than white matter, as it has in every adult brain."""
    out = dict(tissues)
    for name, ((t1_low, t1_high), (t2_low, t2_high)) in RELAXATION_SPREAD.items():
        t = tissues[name]
        out[name] = replace(
            t,
            t1_ms=t.t1_ms * rng.uniform(t1_low, t1_high),
            t2_ms=t.t2_ms * rng.uniform(t2_low, t2_high),
            pd=t.pd * rng.uniform(0.9, 1.1) if name != "csf" else t.pd,
        )
    grey, white = out["gm"], out["wm"]
    out["wm"] = replace(
        white, t1_ms=min(white.t1_ms, grey.t1_ms / 1.1), t2_ms=min(white.t2_ms, grey.t2_ms / 1.05)
    )
    return out


def flair_sequence(tissues: Mapping[str, Tissue]) -> Sequence:
    """The canonical FLAIR protocol with its inversion time at these tissues' CSF null,
    as a site sets its protocol: CSF is dark on every FLAIR, whatever its T1."""
    canonical = SEQUENCES["FLAIR"]
    csf_t1 = tissues["csf"].t1_ms
    null = csf_t1 * math.log(2.0 / (1.0 + math.exp(-canonical.tr_ms / csf_t1)))
    return replace(canonical, ti_ms=null)


def _curve(rng: np.random.Generator, image: FloatArray) -> FloatArray:
    """A random monotone intensity curve: a power law on the image's own scale."""
    level = float(np.percentile(image, 99.5)) or 1.0
    gamma = _log_uniform(rng, 0.7, 1.45)
    return (level * np.power(np.clip(image / level, 0.0, None), gamma)).astype(np.float32)


def coil_bias(rng: np.random.Generator, centres: FloatArray) -> FloatArray:
    """The receive coil's smooth gain over the head (up to ±30 %): one per session, so
    every series of a subject shares it, as series of one study on one coil do."""
    amplitude = float(rng.uniform(0.0, 0.3))
    return np.exp(Waves(rng, amplitude=amplitude, count=4)(centres)).astype(np.float32)


def random_mr(
    fractions: Mapping[str, FloatArray],
    signals: Mapping[str, float],
    bias: FloatArray,
    rng: np.random.Generator,
) -> FloatArray:
    """An MR image of the fractions with the given tissue signals, then the scanner:
    monotone curve, in-plane blur, the coil's bias, background level, Rician noise,
    gain."""
    clean = sum(f * np.float32(signals[name]) for name, f in fractions.items())
    image = _curve(rng, np.asarray(clean, dtype=np.float32))
    if rng.uniform() < 0.5:
        sigma = float(rng.uniform(0.2, 0.9))
        image = ndimage.gaussian_filter(image, sigma=(0.0, sigma, sigma))
    image = image * bias
    level = float(np.percentile(image, 99))
    if rng.uniform() < 0.3:
        image = image + np.float32(rng.uniform(0.0, 0.03) * level)
    sigma = _log_uniform(rng, 0.004, 0.06) * level
    real = image + rng.normal(0.0, sigma, size=image.shape).astype(np.float32)
    imaginary = rng.normal(0.0, sigma, size=image.shape).astype(np.float32)
    magnitude = np.sqrt(real**2 + imaginary**2)
    gain = _log_uniform(rng, 200.0, 4000.0) / (float(np.percentile(magnitude, 99.5)) or 1.0)
    return (magnitude * np.float32(gain)).astype(np.float32)


def simulate_randomized(seed: int, whole_head: bool = False, physical: bool = False) -> Subject:
    """The domain-randomised subject of ``seed``: T1w and T2w with random contrast and
    scanner on a random grid (a training slab, or the ``whole_head``), and on the same
    grid the targets: CT in HU, and the FLAIR the same session would have acquired (the
    canonical inversion-recovery contrast of the subject's tissues under the coil bias
    the inputs share, without noise).

    ``physical``: the subject's tissues are drawn wide (:func:`varied_tissues`) and both
    inputs and the FLAIR are their signal equations' images of those tissues, so that
    the FLAIR is a function of what the T1w and T2w show, not of which tissue a voxel
    belongs to (otherwise the inputs' contrast is drawn apart from the FLAIR's)."""
    rng = np.random.default_rng(seed)
    anatomy = draw_anatomy(rng)
    geometry = random_geometry(rng, whole_head)
    depths = int(np.clip(np.ceil(geometry.spacing[0] / 1.5), 2, 4))
    fractions, inside, centres = anatomy.sample(geometry, depths)
    bias = coil_bias(rng, centres)
    if physical:
        tissues = varied_tissues(rng, anatomy.tissues)
        signals, flair_protocol = _physical_signals, flair_sequence(tissues)
    else:
        tissues = anatomy.tissues
        signals, flair_protocol = _tissue_signals, SEQUENCES["FLAIR"]
    images = {
        role: Volume(random_mr(fractions, signals(rng, role, tissues), bias, rng), geometry)
        for role in ("T1", "T2")
    }
    flair = clean_mr(fractions, flair_protocol, tissues) * bias
    images["FLAIR"] = Volume(flair, geometry)
    images["CT"] = Volume(ct_image(fractions, anatomy.tissues, rng), geometry)
    return subject_from(seed, geometry, images, fractions, inside, anatomy.tissues, bias, flair)
