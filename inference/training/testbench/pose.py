"""Where the head lies in the scanner: size, tilt and position, drawn once per case."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])


def rotation(axis: npt.NDArray[np.float64], degrees: float) -> npt.NDArray[np.float64]:
    """Rotation matrix about a unit ``axis`` (Rodrigues)."""
    a = axis / np.linalg.norm(axis)
    k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    t = np.radians(degrees)
    return np.eye(3) + np.sin(t) * k + (1 - np.cos(t)) * (k @ k)


@dataclass(frozen=True)
class Pose:
    """Patient LPS mm = ``matrix`` @ template (MNI RAS) mm + ``offset``."""

    matrix: npt.NDArray[np.float64]
    offset: npt.NDArray[np.float64]
    scale: tuple[float, float, float]
    tilt_degrees: tuple[float, float, float]

    def to_patient(self, points: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """(n, 3) template mm → patient mm."""
        return points @ self.matrix.T + self.offset

    def to_template(self) -> npt.NDArray[np.float64]:
        """4×4: homogeneous patient mm → template mm."""
        inverse = np.linalg.inv(self.matrix)
        out = np.eye(4)
        out[:3, :3] = inverse
        out[:3, 3] = -inverse @ self.offset
        return out

    def describe(self) -> str:
        s, t = self.scale, self.tilt_degrees
        return (
            f"scale LR {s[0]:.2f} AP {s[1]:.2f} SI {s[2]:.2f}; tilt {t[0]:+.1f}° {t[1]:+.1f}° "
            f"{t[2]:+.1f}° about LR, AP, SI; offset {np.round(self.offset, 1).tolist()} mm"
        )


def draw_pose(rng: np.random.Generator, centre: tuple[float, float, float]) -> Pose:
    """Scale 0.88–1.12 per axis, ±10° about each axis, the template's ``centre`` within
    10 mm of the isocentre."""
    sx, sy, sz = (float(v) for v in rng.uniform(0.88, 1.12, size=3))
    tx, ty, tz = (float(v) for v in rng.uniform(-10.0, 10.0, size=3))
    scale, tilt = (sx, sy, sz), (tx, ty, tz)
    turn = np.eye(3)
    for axis, degrees in enumerate(tilt):
        turn = rotation(np.eye(3)[axis], degrees) @ turn
    matrix = turn @ RAS_TO_LPS @ np.diag(scale)
    offset = rng.uniform(-10.0, 10.0, size=3) - matrix @ np.asarray(centre)
    return Pose(matrix=matrix, offset=offset, scale=scale, tilt_degrees=tilt)
