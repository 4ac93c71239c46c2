"""The slice stack of a Scan: orientation, obliquity, field of view and coverage of the head."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from inference.geometry import Geometry
from inference.training.testbench.pose import rotation

PLANES: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "axial": ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0)),
    "sagittal": ((0.0, 1.0, 0.0), (0.0, 0.0, -1.0)),
    "coronal": ((1.0, 0.0, 0.0), (0.0, 0.0, -1.0)),
}
"""Image Orientation (Patient) of each plane: row and column direction cosines (LPS)."""
MARGIN_MM = 2.0
"""Coverage beyond the head's outermost points along the slice direction."""
REACH_SLACK_MM = 4.0


def slice_axes(
    plane: str, oblique_degrees: float, rng: np.random.Generator
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Row, column and slice directions: the plane tilted about a random in-plane axis."""
    row, column = (np.asarray(v) for v in PLANES[plane])
    angle = rng.uniform(0.0, 2 * np.pi)
    turn = rotation(np.cos(angle) * row + np.sin(angle) * column, oblique_degrees)
    row, column = turn @ row, turn @ column
    return row, column, np.cross(row, column)


def _tuple(v: npt.NDArray[np.float64]) -> tuple[float, float, float]:
    return (float(v[0]), float(v[1]), float(v[2]))


@dataclass(frozen=True)
class Stack:
    """An output grid and, per slice, the rows and columns the head can reach."""

    geometry: Geometry
    head_points: npt.NDArray[np.float64]
    """(n, 3) grid indices (k, j, i) of points of the head and neck, to crop work to them."""

    def reach(self, k0: int, k1: int) -> tuple[int, int, int, int]:
        """Row and column bounds (j0, j1, i0, i1) of the head within slices k0..k1-1,
        widened by the spacing of the points (2 mm) and the slice thickness."""
        thickness, pixel, _ = self.geometry.spacing
        slack, margin = math.ceil(REACH_SLACK_MM / thickness), math.ceil(REACH_SLACK_MM / pixel)
        k = self.head_points[:, 0]
        near = self.head_points[(k > k0 - slack) & (k < k1 + slack)]
        _, rows, cols = self.geometry.shape
        if near.size == 0:
            return 0, 0, 0, 0
        j0, i0 = np.floor(near[:, 1:].min(axis=0)).astype(int) - margin
        j1, i1 = np.ceil(near[:, 1:].max(axis=0)).astype(int) + margin + 1
        return max(j0, 0), min(j1, rows), max(i0, 0), min(i1, cols)


def plan_stack(
    plane: str,
    oblique_degrees: float,
    pixel_mm: float,
    thickness_mm: float,
    fov_mm: float,
    head_points: npt.NDArray[np.float64],
    neck_points: npt.NDArray[np.float64],
    rng: np.random.Generator,
) -> Stack:
    """Contiguous slices covering all of ``head_points`` (patient mm) along the slice normal,
    with a square field of view centred on the head in plane; ``neck_points`` (the neck
    below the painted grid) widen only the work area, not the coverage."""
    row, column, normal = slice_axes(plane, oblique_degrees, rng)
    along = head_points @ normal
    lo, hi = float(along.min()) - MARGIN_MM, float(along.max()) + MARGIN_MM
    slices = max(1, math.ceil((hi - lo) / thickness_mm))
    side = max(1, round(fov_mm / pixel_mm))
    across_rows, across_cols = head_points @ column, head_points @ row
    centre_j = (float(across_rows.min()) + float(across_rows.max())) / 2
    centre_i = (float(across_cols.min()) + float(across_cols.max())) / 2
    centre_k = (lo + hi) / 2
    origin = (
        (centre_k - (slices - 1) / 2 * thickness_mm) * normal
        + (centre_j - (side - 1) / 2 * pixel_mm) * column
        + (centre_i - (side - 1) / 2 * pixel_mm) * row
    )
    geometry = Geometry(
        origin=_tuple(origin),
        row_direction=_tuple(row),
        column_direction=_tuple(column),
        slice_direction=_tuple(normal),
        spacing=(float(thickness_mm), float(pixel_mm), float(pixel_mm)),
        shape=(slices, side, side),
    )
    to_index = np.linalg.inv(geometry.affine)
    points = np.concatenate([head_points, neck_points])
    indices = points @ to_index[:3, :3].T + to_index[:3, 3]
    return Stack(geometry=geometry, head_points=indices)
