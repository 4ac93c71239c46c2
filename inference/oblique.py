"""The grid in a model's plane that an oblique input is resampled onto.

Permuting voxel axes (:mod:`inference.reorient`) brings any series to within 45° of a
model's plane, but leaves it as tilted as it was acquired. A model card that states how
oblique its training data was (``max_obliquity_degrees``) asks for more: an input
tilted beyond that is resampled, trilinearly through patient coordinates, onto a grid
lying exactly in the model's plane and covering the whole input volume; the model runs
there, and its output is resampled back onto the source grid, so the synthetic series
still lies on the source slices (PS3.3 C.7.6.2: each output slice keeps its source
slice's Image Position and Orientation (Patient)).
"""

from __future__ import annotations

import itertools

import numpy as np

from inference.geometry import PLANE_AXES, Geometry

MARGIN_VOXELS = 1
"""Voxels added on every side of the plane grid, so that each source voxel centre lies
strictly inside it and trilinear interpolation back never reaches past its edge."""


def obliquity_degrees(geometry: Geometry, plane: str) -> float:
    """Angle between ``geometry``'s slice normal and ``plane``'s normal, 0°–90°; the
    normal's sign (slice order) does not count."""
    normal = np.asarray(PLANE_AXES[plane][0])
    cosine = abs(float(np.dot(geometry.slice_direction, normal)))
    return float(np.degrees(np.arccos(min(1.0, cosine))))


def plane_grid(
    source: Geometry, plane: str, pixel_spacing_mm: tuple[float, float] | None
) -> Geometry:
    """A grid in ``plane`` that covers every voxel centre of ``source``.

    In plane it takes ``pixel_spacing_mm`` (the card's; the source's finer in-plane
    spacing when the card states none). Through plane it takes the source's slice
    spacing, the slice distance the model would have seen had the series been acquired
    in the plane.
    """
    normal, rows_grow, columns_grow = (np.asarray(a) for a in PLANE_AXES[plane])
    finest = min(source.spacing[1:])
    row_mm, column_mm = pixel_spacing_mm or (finest, finest)
    spacing = (source.spacing[0], row_mm, column_mm)
    corners = np.asarray(
        [
            (source.affine @ np.asarray([k, j, i, 1.0]))[:3]
            for k, j, i in itertools.product(*[(0, n - 1) for n in source.shape])
        ]
    )
    frame = np.stack([normal, rows_grow, columns_grow])
    along = corners @ frame.T
    low = along.min(axis=0) - np.asarray(spacing) * MARGIN_VOXELS
    high = along.max(axis=0) + np.asarray(spacing) * MARGIN_VOXELS
    shape = np.ceil((high - low) / np.asarray(spacing)).astype(int) + 1
    origin = frame.T @ low
    return Geometry(
        origin=_vec(origin),
        row_direction=_vec(columns_grow),
        column_direction=_vec(rows_grow),
        slice_direction=_vec(normal),
        spacing=spacing,
        shape=(int(shape[0]), int(shape[1]), int(shape[2])),
    )


def _vec(v: np.ndarray) -> tuple[float, float, float]:
    return (float(v[0]), float(v[1]), float(v[2]))
