"""Soft shapes over the painted region: masks in [0, 1] with a one-millimetre edge.

The edge ramp is what gives partial volume below the anatomy grid's spacing: a boundary
that crosses a voxel leaves it covered in proportion to how far the boundary reaches.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from inference.geometry import FloatArray

Point = tuple[float, float, float]


def soft_step(signed_depth: FloatArray) -> FloatArray:
    """Coverage of a voxel whose centre lies ``signed_depth`` mm inside a boundary."""
    return np.clip(signed_depth + np.float32(0.5), 0.0, 1.0).astype(np.float32, copy=False)


@dataclass
class Region:
    """Voxels of the anatomy grid that may hold head, with what shapes are defined on.

    ``x, y, z`` are MNI (RAS) millimetres; ``depth`` is the distance in mm outward from the
    closed brain surface (0 inside it); ``ux, uy, uz`` the unit direction from the head
    centre, on which thickness maps are drawn.
    """

    index: npt.NDArray[np.intp]
    x: FloatArray
    y: FloatArray
    z: FloatArray
    depth: FloatArray
    ux: FloatArray
    uy: FloatArray
    uz: FloatArray

    def ellipsoid(
        self, centre: Point, radii: Point, at: npt.NDArray[np.intp] | None = None
    ) -> FloatArray:
        """Coverage by an axis-aligned ellipsoid (of all voxels, or those at ``at``)."""
        x, y, z = (self.x, self.y, self.z) if at is None else (self.x[at], self.y[at], self.z[at])
        q = np.sqrt(
            ((x - centre[0]) / radii[0]) ** 2
            + ((y - centre[1]) / radii[1]) ** 2
            + ((z - centre[2]) / radii[2]) ** 2
        )
        return soft_step((1 - q) * np.float32(min(radii)))

    def near(self, centre: Point, radii: Point) -> npt.NDArray[np.intp]:
        """Positions of the voxels inside the box around an ellipsoid, plus a margin.

        Voxels are stored in grid order, so ``z`` is sorted and bounds a contiguous run.
        """
        lo, hi = np.searchsorted(self.z, [centre[2] - radii[2] - 1, centre[2] + radii[2] + 1])
        x, y = self.x[lo:hi], self.y[lo:hi]
        inside = (np.abs(x - np.float32(centre[0])) < radii[0] + 1) & (
            np.abs(y - np.float32(centre[1])) < radii[1] + 1
        )
        return lo + np.flatnonzero(inside)

    def bump(self, direction: Point, width: float) -> FloatArray:
        """A smooth patch on the head: 1 towards ``direction``, ~0 beyond ``width`` (radians)."""
        d = np.asarray(direction, dtype=np.float32)
        d /= np.linalg.norm(d)
        cosine = self.ux * d[0] + self.uy * d[1] + self.uz * d[2]
        return np.exp((cosine - 1) * np.float32(2.0 / width**2)).astype(np.float32, copy=False)

    def lateral_bump(self, direction: Point, width: float) -> FloatArray:
        """``bump`` mirrored left–right, for paired structures."""
        d = np.asarray(direction, dtype=np.float32)
        d /= np.linalg.norm(d)
        cosine = np.abs(self.ux) * d[0] + self.uy * d[1] + self.uz * d[2]
        return np.exp((cosine - 1) * np.float32(2.0 / width**2)).astype(np.float32, copy=False)

    def smooth_field(self, rng: np.random.Generator, amplitude: float) -> FloatArray:
        """A random quadratic of the direction: slow variation over the head, mean ~0."""
        u = (self.ux, self.uy, self.uz)
        out = np.zeros_like(self.ux)
        for i in range(3):
            out += np.float32(rng.normal(0.0, amplitude)) * u[i]
            for j in range(i, 3):
                out += np.float32(rng.normal(0.0, amplitude / 2)) * u[i] * u[j]
        return out
