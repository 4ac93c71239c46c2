"""The head outside the skull's shell: temporalis and neck muscles, the face (orbits,
nasal cavity, maxillary sinuses, maxilla) and the neck (muscle, fat, a vertebra, the
spinal canal, the airway).

A shell of skull, fat and skin around the brain is a head only from the vertex to the
eyebrows. Below, a real head is mostly muscle, fat, bone and air in shapes a shell does
not make: a model that never saw muscle outside the skull reads the temporalis
(intermediate on T1w, like nothing else outside the brain) as bone, and has never seen
a face or a neck. Every structure here is drawn per subject — sizes, positions,
thicknesses — and placed relative to the subject's own brain hull, so it moves with the
head. Soft tissue is only painted outside the skull's outer table; bone and air
outside the cerebrospinal fluid, so nothing here ever enters the brain.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from inference.geometry import FloatArray
from inference.training.soft_shapes import cylinder, ellipsoid, window
from inference.training.template import Template


def _u(rng: np.random.Generator, low: float, high: float) -> float:
    return float(rng.uniform(low, high))


def _vec(*values: float) -> FloatArray:
    return np.array(values, dtype=np.float32)


def paint(fractions: dict[str, FloatArray], tissue: str, weight: FloatArray) -> None:
    """Replace ``weight`` of every voxel with ``tissue``: fractions keep summing to 1.
    Only the voxels the weight touches are visited (most structures are small)."""
    touched = np.flatnonzero(weight)
    if touched.size == 0:
        return
    share = weight.reshape(-1)[touched]
    for name, array in fractions.items():
        if not array.flags.c_contiguous:
            fractions[name] = array = np.ascontiguousarray(array)
        flat = array.reshape(-1)
        flat[touched] *= np.float32(1.0) - share
        if name == tissue:
            flat[touched] += share


@dataclass(frozen=True)
class _Blob:
    """An ellipsoid of one tissue; ``posterior_only`` keeps it behind its centre (an
    orbit's bony walls are open in front of the eye)."""

    tissue: str
    centre: FloatArray
    radii: FloatArray
    soft_tissue: bool = False
    posterior_only: bool = False

    def weight(self, points: FloatArray, width: float) -> FloatArray:
        inside = ellipsoid(points, self.centre, self.radii, width)
        if self.posterior_only:
            inside = inside * np.clip((self.centre[1] - points[..., 1]) / 4.0 + 0.5, 0.0, 1.0)
        return inside.astype(np.float32)


class Extracranial:
    """One subject's muscles, face and neck, drawn from ``rng``."""

    def __init__(self, template: Template, rng: np.random.Generator) -> None:
        self.temporalis = _u(rng, 4.0, 16.0)
        self.temporalis_z = (_u(rng, -35.0, -20.0), _u(rng, 25.0, 50.0))
        self.nuchal = _u(rng, 6.0, 22.0)
        self.nuchal_top = _u(rng, -25.0, -5.0)
        self.face = self._face(template, rng)
        self.neck_top = _u(rng, -60.0, -45.0)
        self.neck = self._neck(rng)
        self.spine_top = _u(rng, -64.0, -56.0)
        self.spine = self._spine(rng)

    def muscle_thickness(self, points: FloatArray) -> FloatArray:
        """Thickness in mm of the muscle between the outer table and the scalp fat: the
        temporalis over the temporal fossa (thickest low down), and the neck muscles
        on the occiput below its ridge."""
        x, y, z = points[..., 0], points[..., 1], points[..., 2]
        low, high = self.temporalis_z
        lateral = np.clip((np.abs(x) - 40.0) / 15.0, 0.0, 1.0)
        taper = 0.35 + 0.65 * np.clip((high - z) / (high - low), 0.0, 1.0)
        temporal = (
            self.temporalis
            * lateral
            * taper
            * window(z, low, high, 10.0)
            * window(y, -60.0, 20.0, 15.0)
        )
        posterior = np.clip((-y - 55.0) / 15.0, 0.0, 1.0)
        below = np.clip((self.nuchal_top - z) / 25.0, 0.0, 1.0)
        return (temporal + self.nuchal * posterior * below).astype(np.float32)

    def _face(self, template: Template, rng: np.random.Generator) -> list[_Blob]:
        """Soft tissue, maxilla, sinuses, nasal cavity and both orbits, placed under the
        subject's frontal lobes."""
        x_eye = _u(rng, 28.0, 36.0)
        under = -template.hull_point((0.0, 0.0, -1.0), (x_eye, 40.0, 0.0))
        z_eye = under - _u(rng, 13.0, 19.0)
        front = template.hull_point((0.0, 1.0, 0.0), (x_eye, 0.0, under + 5.0))
        y_eye = front + _u(rng, -6.0, 2.0)
        globe = _u(rng, 11.0, 12.5)
        skin, fat = _u(rng, 1.5, 3.5), _u(rng, 3.0, 12.0)
        face_centre = _vec(0.0, front - _u(rng, 5.0, 15.0), z_eye - _u(rng, 15.0, 25.0))
        face_radii = _vec(_u(rng, 55.0, 65.0), _u(rng, 35.0, 45.0), _u(rng, 35.0, 45.0))
        blobs = [
            _Blob("skin", face_centre, face_radii, soft_tissue=True),
            _Blob("fat", face_centre, face_radii - skin, soft_tissue=True),
            _Blob("muscle", face_centre, face_radii - skin - fat, soft_tissue=True),
        ]
        maxilla_centre = _vec(0.0, front - _u(rng, 10.0, 20.0), z_eye - _u(rng, 20.0, 30.0))
        maxilla_radii = _vec(_u(rng, 32.0, 40.0), _u(rng, 22.0, 30.0), _u(rng, 18.0, 26.0))
        cortex = _u(rng, 1.5, 3.0)
        blobs += [
            _Blob("cortical", maxilla_centre, maxilla_radii),
            _Blob("marrow", maxilla_centre, maxilla_radii - cortex),
        ]
        for side in (-1.0, 1.0):
            blobs.append(
                _Blob(
                    "air",
                    _vec(
                        side * _u(rng, 20.0, 27.0),
                        front - _u(rng, 12.0, 20.0),
                        z_eye - _u(rng, 22.0, 30.0),
                    ),
                    _vec(_u(rng, 10.0, 15.0), _u(rng, 12.0, 18.0), _u(rng, 12.0, 18.0)),
                )
            )
        blobs.append(
            _Blob(
                "air",
                _vec(0.0, front - _u(rng, 10.0, 20.0), z_eye - _u(rng, 10.0, 18.0)),
                _vec(_u(rng, 7.0, 12.0), _u(rng, 22.0, 30.0), _u(rng, 16.0, 24.0)),
            )
        )
        orbit = _vec(
            globe + _u(rng, 3.0, 7.0), globe + _u(rng, 6.0, 10.0), globe + _u(rng, 3.0, 6.0)
        )
        wall = _u(rng, 1.5, 3.0)
        for side in (-1.0, 1.0):
            eye = _vec(side * x_eye, y_eye, z_eye)
            behind = eye - _vec(0.0, 5.0, 0.0)
            blobs += [
                _Blob("cortical", behind, orbit + wall, posterior_only=True),
                _Blob("fat", behind, orbit),
                _Blob("csf", eye, _vec(globe, globe, globe)),
            ]
        return blobs

    def _neck(self, rng: np.random.Generator) -> list[tuple[str, FloatArray, FloatArray]]:
        """Nested elliptic cylinders of skin, fat and muscle below the skull base."""
        centre = _vec(0.0, _u(rng, -45.0, -32.0))
        radii = _vec(_u(rng, 48.0, 62.0), _u(rng, 48.0, 60.0))
        skin, fat = _u(rng, 1.5, 3.5), _u(rng, 3.0, 12.0)
        return [
            ("skin", centre, radii),
            ("fat", centre, radii - skin),
            ("muscle", centre, radii - skin - fat),
        ]

    def _spine(self, rng: np.random.Generator) -> list[tuple[str, FloatArray, FloatArray]]:
        """The upper cervical spine in cross-section: the posterior arch around the
        canal, the canal's fluid and cord, the vertebral body, and the airway in front."""
        canal_y = _u(rng, -46.0, -38.0)
        cord, canal, arch = _u(rng, 4.0, 5.5), _u(rng, 7.0, 9.0), _u(rng, 11.0, 14.0)
        body = _vec(_u(rng, 8.0, 12.0), _u(rng, 7.0, 10.0))
        body_y = canal_y + canal + _u(rng, 3.0, 6.0) + body[1]
        airway = _vec(_u(rng, 8.0, 15.0), _u(rng, 4.0, 9.0))
        airway_y = body_y + body[1] + _u(rng, 5.0, 10.0) + airway[1]
        cortex = _u(rng, 1.5, 2.5)
        return [
            ("cortical", _vec(0.0, canal_y), _vec(arch, arch)),
            ("csf", _vec(0.0, canal_y), _vec(canal, canal)),
            ("wm", _vec(0.0, canal_y), _vec(cord, cord)),
            ("cortical", _vec(0.0, body_y), body),
            ("marrow", _vec(0.0, body_y), body - cortex),
            ("air", _vec(0.0, airway_y), airway),
        ]

    def paint(
        self,
        fractions: dict[str, FloatArray],
        points: FloatArray,
        width: float,
        outside_csf: FloatArray,
        outside_bone: FloatArray,
    ) -> None:
        """Paint the neck, spine and face over the shell's fractions at ``points``."""
        z = points[..., 2]
        neck = np.clip((self.neck_top - z) / 12.0, 0.0, 1.0) * outside_bone
        for tissue, centre, radii in self.neck:
            paint(fractions, tissue, cylinder(points, centre, radii, width) * neck)
        spine = np.clip((self.spine_top - z) / 6.0, 0.0, 1.0) * outside_csf
        for tissue, centre, radii in self.spine:
            paint(fractions, tissue, cylinder(points, centre, radii, width) * spine)
        for blob in self.face:
            region = outside_bone if blob.soft_tissue else outside_csf
            paint(fractions, blob.tissue, blob.weight(points, width) * region)
