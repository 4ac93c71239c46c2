"""Simulated paired subjects: T1w, T2w, FLAIR and CT of one head, on one scanner grid.

Each subject is the template (``template.py``) moved by its own random affine and
smooth deformation, with its own skull, scalp and CSF thickness, frontal sinus, white
matter lesions, muscles, face and neck (``extracranial.py``), tissue properties,
receive-coil bias field, noise and scanner gain, so
that a held-out seed is a new head, not a copy of a training one. Everything is drawn
from ``numpy.random.default_rng(seed)``: the same seed gives the same subject, bit for
bit. Tissue fractions are sampled at three depths per slice and averaged (the slice
profile) and ramp across one voxel in plane, so partial volume is modelled the same way
in every contrast.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from inference.geometry import FloatArray, Geometry, Volume
from inference.training.extracranial import Extracranial
from inference.training.soft_shapes import ellipsoid, step
from inference.training.template import Template, load_template
from inference.training.tissues import SEQUENCES, Sequence, Tissue, jittered

BoolArray = npt.NDArray[np.bool_]

HEAD_CENTRE_RAS = np.array([0.0, -17.0, 20.0])
"""Centre of the template head in MNI millimetres: the middle of the field of view."""


@dataclass(frozen=True)
class Acquisition:
    """The scanner grid every contrast of a subject is simulated on (axial slices)."""

    pixel_spacing_mm: float = 1.5
    slice_thickness_mm: float = 3.0
    rows: int = 176
    columns: int = 160
    z_range_mm: tuple[float, float] = (-46.0, 95.0)
    """Inferior and superior end of the slab, in template millimetres."""

    @property
    def slices(self) -> int:
        low, high = self.z_range_mm
        return int(np.floor((high - low) / self.slice_thickness_mm)) + 1

    def geometry(self, shift_mm: npt.ArrayLike = (0.0, 0.0, 0.0)) -> Geometry:
        """Axial geometry in patient LPS millimetres, head-first supine."""
        shift = np.asarray(shift_mm, dtype=float)
        ps = self.pixel_spacing_mm
        origin = (
            -(self.columns - 1) / 2 * ps + shift[0],
            -HEAD_CENTRE_RAS[1] - (self.rows - 1) / 2 * ps + shift[1],
            self.z_range_mm[0] + shift[2],
        )
        return Geometry(
            origin=(float(origin[0]), float(origin[1]), float(origin[2])),
            row_direction=(1.0, 0.0, 0.0),
            column_direction=(0.0, 1.0, 0.0),
            slice_direction=(0.0, 0.0, 1.0),
            spacing=(self.slice_thickness_mm, ps, ps),
            shape=(self.slices, self.rows, self.columns),
        )


@dataclass(frozen=True)
class Subject:
    """One simulated head: its images in physical units, and the truth behind them."""

    seed: int
    images: dict[str, Volume]
    """``T1``, ``T2``, ``FLAIR`` (scanner units) and ``CT`` (HU), on one grid."""
    head: BoolArray
    """Inside the head: everything but the air around it (sinus air included)."""
    bone: BoolArray
    """Cortical bone and diploë make up at least half of the voxel."""
    brain: BoolArray
    """Inside the brain's hull (brain tissue and the CSF among it)."""
    fractions: dict[str, FloatArray]
    """Each tissue's share of every voxel (``tissues.TISSUES`` names; they sum to 1)."""
    targets: dict[str, Volume]
    """``FLAIR`` and ``CT`` as acquired but without noise: what the head is, which a
    synthetic image is judged against (no model can predict an acquisition's noise)."""


class Waves:
    """A smooth random field: a sum of plane waves of wavelengths 60–200 mm."""

    def __init__(self, rng: np.random.Generator, amplitude: float, count: int = 6) -> None:
        directions = rng.normal(size=(count, 3))
        directions /= np.linalg.norm(directions, axis=1, keepdims=True)
        wavelengths = rng.uniform(60.0, 200.0, size=count)
        self.k = directions * (2 * np.pi / wavelengths)[:, None]
        self.phase = rng.uniform(0, 2 * np.pi, size=count)
        self.amplitude = amplitude / np.sqrt(count / 2)

    def __call__(self, points: FloatArray) -> FloatArray:
        """Field values at ``points`` (..., 3) in millimetres."""
        arg = points @ self.k.T + self.phase
        return (self.amplitude * np.sin(arg).sum(axis=-1)).astype(np.float32)


def _rotation(rng: np.random.Generator, max_degrees: tuple[float, float, float]) -> FloatArray:
    ax, ay, az = (np.deg2rad(rng.uniform(-m, m)) for m in max_degrees)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return np.asarray(rz @ ry @ rx, dtype=np.float64)


@dataclass(frozen=True)
class _Cavity:
    """An air-filled ellipsoid inside the bone (a sinus, mastoid cells), which thickens
    the diploë around it along ``depth_axis`` (template x, y or z)."""

    centre: FloatArray
    radii: FloatArray
    depth_axis: int


class _Head:
    """One subject's anatomy, as tissue fractions at any template-space points."""

    def __init__(self, template: Template, rng: np.random.Generator) -> None:
        self.template = template
        self.to_voxel = np.linalg.inv(template.affine)
        self.csf_gap = float(rng.uniform(1.0, 4.0))
        skull = float(rng.uniform(3.0, 10.0))
        self.inner_table = skull * float(rng.uniform(0.18, 0.3))
        self.outer_table = skull * float(rng.uniform(0.2, 0.32))
        self.diploe = skull - self.inner_table - self.outer_table
        self.fat = float(rng.uniform(1.0, 8.0))
        self.skin = float(rng.uniform(1.5, 3.5))
        self.diploe_waves = Waves(rng, amplitude=0.15 * self.diploe + 0.3)
        self.fat_waves = Waves(rng, amplitude=1.5)
        self.cavities: list[_Cavity] = []
        if rng.uniform() < 0.85:
            self.cavities.append(self._frontal_sinus(rng))
        if rng.uniform() < 0.8:
            self.cavities += [self._mastoid(rng, side) for side in (-1.0, 1.0)]
        self.lesions = self._lesions(rng) if rng.uniform() < 0.6 else []
        self.extracranial = Extracranial(template, rng)

    def _frontal_sinus(self, rng: np.random.Generator) -> _Cavity:
        """Air inside a thickened frontal bone, above the nose."""
        z = float(rng.uniform(0.0, 14.0))
        x = float(rng.uniform(-4.0, 4.0))
        surface = self.template.hull_point((0.0, 1.0, 0.0), (x, 0.0, z))
        radii = np.array(
            [rng.uniform(8.0, 16.0), rng.uniform(3.5, 6.5), rng.uniform(7.0, 13.0)],
            dtype=np.float32,
        )
        depth = self.csf_gap + self.inner_table + radii[1] + 0.5
        return _Cavity(np.array([x, surface + depth, z], dtype=np.float32), radii, 1)

    def _mastoid(self, rng: np.random.Generator, side: float) -> _Cavity:
        """Mastoid air cells: air in a thickened temporal bone behind the ear."""
        y = float(rng.uniform(-42.0, -30.0))
        z = float(rng.uniform(-36.0, -24.0))
        surface = self.template.hull_point((side, 0.0, 0.0), (0.0, y, z))
        radii = np.array(
            [rng.uniform(4.0, 8.0), rng.uniform(7.0, 12.0), rng.uniform(6.0, 11.0)],
            dtype=np.float32,
        )
        depth = self.csf_gap + self.inner_table + radii[0] + 0.5
        return _Cavity(np.array([side * (surface + depth), y, z], dtype=np.float32), radii, 0)

    def _lesions(self, rng: np.random.Generator) -> list[tuple[FloatArray, FloatArray]]:
        """Periventricular white-matter hyperintensities: small ellipsoids in deep WM."""
        wm = self.template.wm
        count = int(rng.integers(1, 7))
        lesions: list[tuple[FloatArray, FloatArray]] = []
        while len(lesions) < count:
            index = np.array([rng.integers(0, n) for n in wm.shape])
            if wm[tuple(index)] < 0.95:
                continue
            centre = (self.template.affine @ np.append(index, 1.0))[:3]
            if abs(centre[0]) > 40 or not -60 < centre[1] < 40 or not 0 < centre[2] < 50:
                continue
            lesions.append(
                (centre.astype(np.float32), rng.uniform(2.0, 6.0, size=3).astype(np.float32))
            )
        return lesions

    def _sample(self, volume: FloatArray, points: FloatArray, outside: float) -> FloatArray:
        ijk = points @ self.to_voxel[:3, :3].T + self.to_voxel[:3, 3]
        coords = np.moveaxis(ijk, -1, 0).reshape(3, -1)
        values = ndimage.map_coordinates(volume, coords, order=1, mode="constant", cval=outside)
        return values.reshape(points.shape[:-1]).astype(np.float32)

    def fractions(
        self, points: FloatArray, width: float
    ) -> tuple[dict[str, FloatArray], FloatArray]:
        """Tissue fractions (summing to 1) at template-space ``points`` (..., 3), and the
        fraction of each point inside the brain's hull."""
        s = self._sample(self.template.hull_distance, points, outside=100.0)
        gm = self._sample(self.template.gm, points, outside=0.0)
        wm = self._sample(self.template.wm, points, outside=0.0)
        diploe = np.maximum(self.diploe + self.diploe_waves(points), 0.5)
        air_in_bone = np.zeros_like(s)
        for cavity in self.cavities:
            near = ellipsoid(points, cavity.centre, cavity.radii + np.float32(6.0), 6.0)
            diploe = np.maximum(diploe, near * (2 * cavity.radii[cavity.depth_axis] + 1.5))
            air_in_bone = np.maximum(
                air_in_bone, ellipsoid(points, cavity.centre, cavity.radii, width)
            )
        bounds: list[FloatArray | float] = [0.0, self.csf_gap]
        muscle = self.extracranial.muscle_thickness(points)
        for thickness in (self.inner_table, diploe, self.outer_table, muscle):
            bounds.append(bounds[-1] + thickness)
        bounds.append(bounds[-1] + np.maximum(self.fat + self.fat_waves(points), 0.5))
        bounds.append(bounds[-1] + self.skin)
        beyond = [step(s, b, width) for b in bounds]
        layers = [beyond[i] - beyond[i + 1] for i in range(len(bounds) - 1)]
        inside = 1.0 - beyond[0]
        lesion = np.zeros_like(s)
        for centre, radii in self.lesions:
            lesion = np.maximum(lesion, ellipsoid(points, centre, radii, 1.5))
        lesion = np.minimum(lesion, wm)
        brain_csf = np.clip(1.0 - gm - wm, 0.0, 1.0)
        marrow = layers[2] * (1.0 - air_in_bone)
        fractions = {
            "gm": gm * inside,
            "wm": (wm - lesion) * inside,
            "lesion": lesion * inside,
            "csf": brain_csf * inside + layers[0],
            "cortical": layers[1] + layers[3],
            "marrow": marrow,
            "air": layers[2] * air_in_bone + beyond[-1],
            "muscle": layers[4],
            "fat": layers[5],
            "skin": layers[6],
        }
        self.extracranial.paint(fractions, points, width, beyond[1], beyond[4])
        return fractions, inside


def _sample_points(geometry: Geometry, depths: int) -> FloatArray:
    """Patient (RAS) positions of ``depths`` samples across each voxel's slice thickness:
    shape (depths, slices, rows, columns, 3)."""
    k, j, i = (np.arange(n, dtype=np.float64) for n in geometry.shape)
    offsets = (np.arange(depths) - (depths - 1) / 2) / depths
    kk = k[None, :, None, None] + offsets[:, None, None, None]
    jj = j[None, None, :, None]
    ii = i[None, None, None, :]
    a = geometry.affine
    lps = [a[d, 0] * kk + a[d, 1] * jj + a[d, 2] * ii + a[d, 3] for d in range(3)]
    ras = np.stack(np.broadcast_arrays(-lps[0], -lps[1], lps[2]), axis=-1)
    return ras.astype(np.float32)


def _subject_transform(rng: np.random.Generator) -> tuple[FloatArray, FloatArray, Waves]:
    """Patient → template: rotation, anisotropic scale, shift, smooth deformation."""
    matrix = _rotation(rng, (5.0, 4.0, 6.0)) @ np.diag(rng.uniform(0.88, 1.12, size=3))
    shift = rng.uniform(-4.0, 4.0, size=3)
    return matrix.astype(np.float32), shift.astype(np.float32), Waves(rng, amplitude=2.5)


def _to_template(
    points: FloatArray, matrix: FloatArray, shift: FloatArray, warp: Waves
) -> FloatArray:
    centred = points - HEAD_CENTRE_RAS.astype(np.float32)
    moved = centred @ matrix.T + HEAD_CENTRE_RAS.astype(np.float32) + shift
    for axis in range(3):
        moved[..., axis] += warp(points + np.float32(37.0 * (axis + 1)))
    return moved


def mr_image(
    fractions: dict[str, FloatArray],
    tissues: dict[str, Tissue],
    role: str,
    bias: FloatArray,
    rng: np.random.Generator,
) -> FloatArray:
    clean = clean_mr(fractions, SEQUENCES[role], tissues) * bias
    sigma = float(rng.uniform(0.008, 0.02)) * float(np.percentile(clean, 99))
    real = clean + rng.normal(0.0, sigma, size=clean.shape).astype(np.float32)
    imaginary = rng.normal(0.0, sigma, size=clean.shape).astype(np.float32)
    magnitude = np.sqrt(real**2 + imaginary**2)
    gain = float(rng.uniform(600.0, 3000.0)) / float(np.percentile(magnitude, 99.5))
    return (magnitude * np.float32(gain)).astype(np.float32)


def clean_mr(
    fractions: Mapping[str, FloatArray], sequence: Sequence, tissues: Mapping[str, Tissue]
) -> FloatArray:
    """The anatomy's own image for ``sequence``: no bias, noise or blur (a target)."""
    clean = sum(f * np.float32(sequence.signal(tissues[name])) for name, f in fractions.items())
    return np.asarray(clean, dtype=np.float32)


def clean_ct(fractions: Mapping[str, FloatArray], tissues: Mapping[str, Tissue]) -> FloatArray:
    """CT in HU without quantum noise: each voxel's mixture of tissue CT numbers under
    the scanner's blur."""
    hu = sum(f * np.float32(tissues[name].hu) for name, f in fractions.items())
    blurred = ndimage.gaussian_filter(np.asarray(hu, dtype=np.float32), sigma=(0.0, 0.4, 0.4))
    return np.clip(blurred, -1024.0, 3071.0).astype(np.float32)


def ct_image(
    fractions: Mapping[str, FloatArray], tissues: Mapping[str, Tissue], rng: np.random.Generator
) -> FloatArray:
    """CT in HU: :func:`clean_ct` and the scanner's quantum noise."""
    hu = clean_ct(fractions, tissues)
    hu += rng.normal(0.0, rng.uniform(4.0, 10.0), size=hu.shape).astype(np.float32)
    return np.clip(hu, -1024.0, 3071.0).astype(np.float32)


@dataclass(frozen=True)
class Anatomy:
    """One person's head in patient space, before any scanner sees it: its shape, its
    layers and cavities, and its tissues' properties."""

    head: _Head
    matrix: FloatArray
    shift: FloatArray
    warp: Waves
    tissues: dict[str, Tissue]

    def sample(
        self, geometry: Geometry, depths: int
    ) -> tuple[dict[str, FloatArray], FloatArray, FloatArray]:
        """Tissue fractions of every voxel of ``geometry`` (``depths`` samples across the
        slice thickness, averaged), the fraction inside the brain's hull, and each
        voxel's centre in template millimetres (for smooth fields such as the bias)."""
        points = _to_template(_sample_points(geometry, depths), self.matrix, self.shift, self.warp)
        width = float(min(geometry.spacing[1:]))
        per_depth, inside = self.head.fractions(points, width)
        fractions = {name: f.mean(axis=0) for name, f in per_depth.items()}
        return fractions, inside.mean(axis=0), points.mean(axis=0)


def draw_anatomy(rng: np.random.Generator) -> Anatomy:
    """The next head from ``rng``: transform, layers, cavities, lesions, tissues."""
    matrix, shift, warp = _subject_transform(rng)
    head = _Head(load_template(), rng)
    return Anatomy(head, matrix, shift, warp, jittered(rng))


def subject_from(
    seed: int,
    geometry: Geometry,
    images: dict[str, Volume],
    fractions: dict[str, FloatArray],
    inside: FloatArray,
    tissues: Mapping[str, Tissue],
    bias: FloatArray,
    flair: FloatArray | None = None,
) -> Subject:
    """A subject with its truth masks derived from the fractions, and its noise-free
    targets on ``geometry``: the canonical FLAIR under the coil ``bias`` (``flair``,
    when the caller has made it already), and the CT without quantum noise."""
    if flair is None:
        flair = clean_mr(fractions, SEQUENCES["FLAIR"], tissues) * bias
    return Subject(
        seed=seed,
        images=images,
        head=_head_mask(fractions),
        bone=(fractions["cortical"] + fractions["marrow"]) >= 0.5,
        brain=inside >= 0.5,
        fractions=fractions,
        targets={
            "FLAIR": Volume(flair, geometry),
            "CT": Volume(clean_ct(fractions, tissues), geometry),
        },
    )


def simulate_subject(seed: int, acquisition: Acquisition | None = None) -> Subject:
    """The subject of ``seed`` on the canonical axial grid, with the canonical spin-echo
    and inversion-recovery contrasts: T1w, T2w, FLAIR and CT of one head."""
    acquisition = acquisition or Acquisition()
    rng = np.random.default_rng(seed)
    anatomy = draw_anatomy(rng)
    geometry = acquisition.geometry(rng.uniform(-5.0, 5.0, size=3))
    fractions, inside, centres = anatomy.sample(geometry, depths=3)
    bias = np.exp(Waves(rng, amplitude=0.12, count=4)(centres)).astype(np.float32)
    images = {
        role: Volume(
            mr_image(fractions, anatomy.tissues, role, bias, rng),
            geometry,
            {
                "tr": f"{SEQUENCES[role].tr_ms:g}",
                "te": f"{SEQUENCES[role].te_ms:g}",
                "ti": f"{SEQUENCES[role].ti_ms:g}",
            },
        )
        for role in ("T1", "T2", "FLAIR")
    }
    images["CT"] = Volume(ct_image(fractions, anatomy.tissues, rng), geometry)
    return subject_from(seed, geometry, images, fractions, inside, anatomy.tissues, bias)


def _head_mask(fractions: dict[str, FloatArray]) -> BoolArray:
    """Voxels that are mostly not the air around the head; sinus air is enclosed by
    bone, so holes are filled slice by slice."""
    tissue = fractions["air"] < 0.5
    filled = np.stack([ndimage.binary_fill_holes(s) for s in tissue])
    return np.asarray(filled, dtype=bool)
