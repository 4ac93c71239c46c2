"""Volumes with their place in patient space: the currency between DICOM and the models.

Axes are (slice, row, column) = (k, j, i). Patient coordinates follow DICOM's LPS
convention (PS3.3 C.7.6.2.1.1): ``row_direction`` is the direction in which the column
index i grows (the first triplet of Image Orientation (Patient)), ``column_direction``
the direction in which the row index j grows (the second triplet).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]

PLANE_AXES: dict[str, tuple[tuple[float, float, float], ...]] = {
    "axial": ((0.0, 0.0, 1.0), (0.0, 1.0, 0.0), (1.0, 0.0, 0.0)),
    "coronal": ((0.0, 1.0, 0.0), (0.0, 0.0, -1.0), (1.0, 0.0, 0.0)),
    "sagittal": ((-1.0, 0.0, 0.0), (0.0, 0.0, -1.0), (0.0, 1.0, 0.0)),
}
"""Per plane, the patient directions (LPS) of the slice, row-index and column-index axes:
the Image Orientation (Patient) a viewer shows the plane in, and its normal."""


@dataclass(frozen=True)
class Geometry:
    """Where a (k, j, i) voxel lies in patient space, in millimetres."""

    origin: tuple[float, float, float]
    row_direction: tuple[float, float, float]
    column_direction: tuple[float, float, float]
    slice_direction: tuple[float, float, float]
    spacing: tuple[float, float, float]
    """(between slices, between rows, between columns)."""
    shape: tuple[int, int, int]

    def __post_init__(self) -> None:
        for name in ("row_direction", "column_direction", "slice_direction"):
            if abs(np.linalg.norm(getattr(self, name)) - 1.0) > 1e-3:
                raise ValueError(f"{name} {getattr(self, name)} is not a unit vector")
        if min(self.spacing) <= 0:
            raise ValueError(f"spacing {self.spacing} must be positive")
        if min(self.shape) < 1:
            raise ValueError(f"shape {self.shape} must be positive")

    @property
    def affine(self) -> npt.NDArray[np.float64]:
        """4×4 matrix mapping homogeneous (k, j, i, 1) to patient (x, y, z, 1)."""
        m = np.eye(4)
        m[:3, 0] = np.asarray(self.slice_direction) * self.spacing[0]
        m[:3, 1] = np.asarray(self.column_direction) * self.spacing[1]
        m[:3, 2] = np.asarray(self.row_direction) * self.spacing[2]
        m[:3, 3] = self.origin
        return m

    def slice_origin(self, k: int) -> tuple[float, float, float]:
        """Patient position of voxel (k, 0, 0): a slice's Image Position (Patient)."""
        p = np.asarray(self.origin) + k * self.spacing[0] * np.asarray(self.slice_direction)
        return (float(p[0]), float(p[1]), float(p[2]))

    def same_grid(self, other: Geometry, tol_mm: float = 1e-3) -> bool:
        return self.shape == other.shape and bool(
            np.allclose(self.affine, other.affine, atol=tol_mm)
        )


@dataclass(frozen=True)
class Volume:
    """A scalar volume in physical units (HU for CT, scanner units for MR)."""

    array: FloatArray
    geometry: Geometry
    meta: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.array.ndim != 3:
            raise ValueError(f"a volume is 3-D, got shape {self.array.shape}")
        if tuple(self.array.shape) != self.geometry.shape:
            raise ValueError(
                f"array shape {self.array.shape} differs from geometry shape {self.geometry.shape}"
            )
