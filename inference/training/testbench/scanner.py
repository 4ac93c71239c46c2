"""What the scanners add to the ideal images: receive bias, gain and Rician noise for MR;
reconstruction blur and quantum noise for CT. Levels are drawn per case; a Scan scales them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from inference.geometry import FloatArray, Geometry

CT_RANGE = (-1024.0, 3071.0)
NOISE_GRAIN_PX = 0.7
"""Correlation (Gaussian sigma, pixels) of CT noise after reconstruction."""


@dataclass(frozen=True)
class MrSeries:
    """Scaling and noise of one MR series: ``gain`` × signal, then noise of sd ``sigma``."""

    gain: float
    sigma: float
    snr: float


@dataclass(frozen=True)
class ScannerDraw:
    """One case's scanner imperfections, before a Scan's multipliers."""

    bias_amplitude: float
    bias_coefficients: tuple[float, ...]
    """Of the nine monomials of degree 1–2 in (x, y, z) / 100 mm."""
    brain_level: dict[str, float]
    snr: dict[str, float]
    ct_kernel_mm: float
    ct_noise_hu: float

    def describe(self) -> dict[str, str]:
        return {
            "receive_bias": f"amplitude {self.bias_amplitude:.2f} (log scale)",
            "mr_snr": ", ".join(f"{k} {v:.0f}" for k, v in self.snr.items()),
            "mr_brain_level": ", ".join(f"{k} {v:.0f}" for k, v in self.brain_level.items()),
            "ct": f"kernel sigma {self.ct_kernel_mm:.2f} mm, noise sd {self.ct_noise_hu:.1f} HU",
        }


def draw_scanner(rng: np.random.Generator) -> ScannerDraw:
    """Bias, gains, SNR (brain signal / noise sd at any voxel size) and CT reconstruction."""
    series = ("T1", "T2", "FLAIR")
    return ScannerDraw(
        bias_amplitude=float(rng.uniform(0.12, 0.35)),
        bias_coefficients=tuple(float(v) for v in rng.normal(0.0, 0.5, size=9)),
        brain_level={s: float(10 ** rng.uniform(2.4, 3.3)) for s in series},
        snr={s: float(rng.uniform(15.0, 40.0)) for s in series},
        ct_kernel_mm=float(rng.uniform(0.35, 0.7)),
        ct_noise_hu=float(rng.uniform(3.0, 10.0)),
    )


def bias_field(
    draw: ScannerDraw, strength: float, geometry: Geometry, k0: int, slices: int, centre: FloatArray
) -> FloatArray:
    """The coil's smooth receive sensitivity over slices k0..k0+slices-1, fixed in the scanner."""
    _, rows, cols = geometry.shape
    m = geometry.affine
    k = (np.arange(slices) + k0)[:, None, None].astype(np.float32)
    j = np.arange(rows)[None, :, None].astype(np.float32)
    i = np.arange(cols)[None, None, :].astype(np.float32)
    u = [
        (m[a, 0] * k + m[a, 1] * j + m[a, 2] * i + (m[a, 3] - centre[a])) / 100.0 for a in range(3)
    ]
    terms = [
        u[0],
        u[1],
        u[2],
        u[0] * u[0],
        u[1] * u[1],
        u[2] * u[2],
        u[0] * u[1],
        u[0] * u[2],
        u[1] * u[2],
    ]
    log_field = sum(np.float32(c) * t for c, t in zip(draw.bias_coefficients, terms, strict=True))
    return np.exp(np.float32(draw.bias_amplitude * strength) * log_field).astype(np.float32)


def magnitude(signal: FloatArray, sigma: float, rng: np.random.Generator) -> FloatArray:
    """|signal + complex Gaussian noise|: Rician inside the head, Rayleigh in the air."""
    if sigma == 0:
        return np.abs(signal)
    real = signal + np.float32(sigma) * rng.standard_normal(signal.shape, dtype=np.float32)
    imaginary = np.float32(sigma) * rng.standard_normal(signal.shape, dtype=np.float32)
    return np.sqrt(real * real + imaginary * imaginary)


def ct_image(
    hu: FloatArray, draw: ScannerDraw, strength: float, pixel_mm: float, rng: np.random.Generator
) -> FloatArray:
    """Reconstruction blur and correlated quantum noise in plane, clipped to the stored range."""
    blurred = ndimage.gaussian_filter(
        hu, (0.0, draw.ct_kernel_mm / pixel_mm, draw.ct_kernel_mm / pixel_mm)
    )
    if strength > 0:
        grain = ndimage.gaussian_filter(
            rng.standard_normal(hu.shape, dtype=np.float32), (0.0, NOISE_GRAIN_PX, NOISE_GRAIN_PX)
        )
        blurred += np.float32(draw.ct_noise_hu * strength / _grain_sd()) * grain
    return np.clip(blurred, *CT_RANGE).astype(np.float32)


def _grain_sd() -> float:
    """Standard deviation of unit white noise after the in-plane grain filter."""
    impulse = np.zeros((1, 33, 33), dtype=np.float64)
    impulse[0, 16, 16] = 1.0
    kernel = ndimage.gaussian_filter(impulse, (0.0, NOISE_GRAIN_PX, NOISE_GRAIN_PX))
    return float(np.sqrt((kernel**2).sum()))
