"""Soft indicators of simple shapes: the fraction of a voxel inside each, ramping across
one voxel's width, so that every structure the simulator places has partial volume."""

from __future__ import annotations

import numpy as np

from inference.geometry import FloatArray


def step(distance: FloatArray, boundary: FloatArray | float, width: float) -> FloatArray:
    """Fraction of a voxel of ``width`` lying beyond ``boundary`` along the distance."""
    return np.clip((distance - boundary) / width + 0.5, 0.0, 1.0).astype(np.float32)


def ellipsoid(
    points: FloatArray, centre: FloatArray, radii: FloatArray, width: float
) -> FloatArray:
    """Soft indicator of an axis-aligned ellipsoid, ramping over ``width`` mm."""
    scaled = np.sqrt((((points - centre) / radii) ** 2).sum(axis=-1))
    depth = (1.0 - scaled) * float(radii.min())
    return np.clip(depth / width + 0.5, 0.0, 1.0).astype(np.float32)


def cylinder(
    points: FloatArray, centre_xy: FloatArray, radii_xy: FloatArray, width: float
) -> FloatArray:
    """Soft indicator of an elliptic cylinder along the template's z axis."""
    return ellipsoid(
        points[..., :2], np.asarray(centre_xy, np.float32), np.asarray(radii_xy, np.float32), width
    )


def window(values: FloatArray, low: float, high: float, ramp: float) -> FloatArray:
    """1 between ``low`` and ``high``, falling to 0 over ``ramp`` mm beyond either end."""
    rise = np.clip((values - low) / ramp + 1.0, 0.0, 1.0)
    fall = np.clip((high - values) / ramp + 1.0, 0.0, 1.0)
    return (rise * fall).astype(np.float32)
