"""Resampling between grids: other inputs onto the first input's grid, and in-plane
spacing to what a model was trained at and back.

Multi-input models need every input voxel-aligned with the first; series of one study
often differ in slice count, spacing or orientation, so the mapping goes through
patient coordinates (each grid's affine), not through voxel indices.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from inference.geometry import FloatArray, Geometry, Volume


def onto_grid(source: Volume, target: Geometry, order: int = 1) -> Volume:
    """``source`` resampled onto ``target``; voxels outside the source take its minimum."""
    if source.geometry.same_grid(target):
        return source
    to_source = np.linalg.inv(source.geometry.affine) @ target.affine
    fill = float(source.array.min())
    _, rows, cols = target.shape
    jj, ii = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    plane = np.stack([np.zeros_like(jj), jj, ii, np.ones_like(jj)]).reshape(4, -1).astype(float)
    out = np.empty(target.shape, dtype=np.float32)
    for k in range(target.shape[0]):
        plane[0] = k
        coords = (to_source @ plane)[:3]
        out[k] = ndimage.map_coordinates(
            source.array, coords, order=order, mode="constant", cval=fill
        ).reshape(rows, cols)
    return Volume(out, target, source.meta)


def zoom_in_plane(array: FloatArray, shape: tuple[int, int], order: int = 1) -> FloatArray:
    """Each slice resized to ``shape`` (rows, columns), pixel areas aligned."""
    if array.shape[1:] == shape:
        return array
    factors = (1.0, shape[0] / array.shape[1], shape[1] / array.shape[2])
    out = ndimage.zoom(array, factors, order=order, mode="nearest", grid_mode=True)
    return out[:, : shape[0], : shape[1]].astype(np.float32, copy=False)


def in_plane_shape(geometry: Geometry, spacing: tuple[float, float]) -> tuple[int, int]:
    """Rows and columns covering the same field of view at ``spacing`` (row, column) mm."""
    _, rows, cols = geometry.shape
    return (
        max(1, round(rows * geometry.spacing[1] / spacing[0])),
        max(1, round(cols * geometry.spacing[2] / spacing[1])),
    )
