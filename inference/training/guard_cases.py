"""Labelled cases for the input guard: T1w heads it must accept, and what it must refuse.

Everything is generated in code from a seed. Heads come from the training simulator
(:func:`inference.training.simulate.simulate_subject`, or any ``Subject`` given), then
moved through what a scanner and a PACS change: pixel spacing, slice thickness,
obliquity, noise, bias, cropped or padded field of view, lossy JPEG 2000. The cases to
refuse are those a node meets in practice: another contrast under a T1 label, a CT, a
QA phantom (uniform sphere or cylinder in air, with and without inserts), pure noise,
and a series with next to nothing in it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import openjpeg
from pydicom.pixels import get_encoder
from pydicom.uid import JPEG2000
from scipy import ndimage

from inference.geometry import FloatArray, Geometry, Volume
from inference.training.simulate import Acquisition, Subject, simulate_subject


@dataclass(frozen=True)
class Case:
    """One volume offered as a T1w input, and whether the guard should accept it."""

    kind: str
    """What the case is, e.g. ``T1 JPEG 2000`` or ``phantom``: the evaluation's row."""
    name: str
    """The kind with its parameters and the subject's acquisition."""
    volume: Volume
    in_distribution: bool


@dataclass(frozen=True)
class ObliqueAcquisition(Acquisition):
    """The simulator's axial grid tilted about the left-right axis, then the
    anterior-posterior one, about the middle of the field of view."""

    tilt_degrees: tuple[float, float] = (0.0, 0.0)

    def geometry(self, shift_mm: npt.ArrayLike = (0.0, 0.0, 0.0)) -> Geometry:
        axial = super().geometry(np.asarray(shift_mm, dtype=float))
        a, b = np.deg2rad(self.tilt_degrees)
        rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
        ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
        turn = ry @ rx
        centre = axial.affine @ np.array([*((np.asarray(axial.shape) - 1) / 2), 1.0])
        origin = centre[:3] + turn @ (np.asarray(axial.origin) - centre[:3])

        def rotated(v: tuple[float, float, float]) -> tuple[float, float, float]:
            r = turn @ np.asarray(v)
            return (float(r[0]), float(r[1]), float(r[2]))

        return Geometry(
            origin=(float(origin[0]), float(origin[1]), float(origin[2])),
            row_direction=rotated(axial.row_direction),
            column_direction=rotated(axial.column_direction),
            slice_direction=rotated(axial.slice_direction),
            spacing=axial.spacing,
            shape=axial.shape,
        )


SIMULATED_VOXELS = 2_000_000
"""Budget of one simulated volume: thin slabs are shortened (partial head coverage) to
stay within it, and in-plane spacings finer than :data:`SIMULATED_SPACING_MM` are
simulated at that spacing and interpolated, as the simulator's cost grows with voxels."""
SIMULATED_SPACING_MM = 1.2
PADDED_VOXELS = 16_000_000
"""A padded field of view grows no larger than this (a 0.5 mm grid is large already)."""


def random_acquisition(rng: np.random.Generator, fast: bool = False) -> ObliqueAcquisition:
    """Slice thickness 1–6 mm (3–6 when ``fast``), tilts up to 20°, a field of view of
    220–280 mm that holds the head, simulated at ≥ 1.2 mm (2 mm when ``fast``) in plane."""
    thickness = float(rng.uniform(3.0, 6.0) if fast else rng.uniform(1.0, 6.0))
    spacing = 2.0 if fast else SIMULATED_SPACING_MM
    fov = float(rng.uniform(220.0, 280.0))
    rows = round(fov / spacing)
    columns = round(rows * float(rng.uniform(0.85, 1.0)))
    low, high = Acquisition.z_range_mm
    slab = min(high - low, SIMULATED_VOXELS / (rows * columns) * thickness)
    middle = float(rng.uniform(low + slab / 2, high - slab / 2))
    return ObliqueAcquisition(
        pixel_spacing_mm=spacing,
        slice_thickness_mm=thickness,
        rows=rows,
        columns=columns,
        z_range_mm=(middle - slab / 2, middle + slab / 2),
        tilt_degrees=(float(rng.uniform(-20, 20)), float(rng.uniform(-10, 10))),
    )


def resampled_in_plane(volume: Volume, spacing_mm: float) -> Volume:
    """The same field of view at another in-plane pixel spacing (linear interpolation)."""
    geometry = volume.geometry
    depth, rows, cols = geometry.shape
    new = (
        max(2, round(rows * geometry.spacing[1] / spacing_mm)),
        max(2, round(cols * geometry.spacing[2] / spacing_mm)),
    )
    zoom = (1.0, (new[0] - 1) / max(rows - 1, 1), (new[1] - 1) / max(cols - 1, 1))
    array = ndimage.zoom(volume.array, zoom, order=1, grid_mode=False)[:, : new[0], : new[1]]
    moved = Geometry(
        origin=geometry.origin,
        row_direction=geometry.row_direction,
        column_direction=geometry.column_direction,
        slice_direction=geometry.slice_direction,
        spacing=(
            geometry.spacing[0],
            geometry.spacing[1] * (rows - 1) / max(array.shape[1] - 1, 1),
            geometry.spacing[2] * (cols - 1) / max(array.shape[2] - 1, 1),
        ),
        shape=(depth, array.shape[1], array.shape[2]),
    )
    return _replace(volume, array, moved)


def _replace(volume: Volume, array: FloatArray, geometry: Geometry | None = None) -> Volume:
    return Volume(np.asarray(array, dtype=np.float32), geometry or volume.geometry)


def with_noise(volume: Volume, rng: np.random.Generator, level: float) -> Volume:
    """Extra Rician noise of ``level`` × the volume's 99th percentile."""
    sigma = level * float(np.percentile(volume.array, 99))
    real = volume.array + rng.normal(0, sigma, volume.array.shape)
    imaginary = rng.normal(0, sigma, volume.array.shape)
    return _replace(volume, np.sqrt(real**2 + imaginary**2))


def with_bias(volume: Volume, rng: np.random.Generator, strength: float) -> Volume:
    """A smooth multiplicative field spanning about ±``strength`` (log units)."""
    k, j, i = (np.linspace(-1, 1, n) for n in volume.array.shape)
    g = rng.normal(size=3)
    g *= strength / np.linalg.norm(g)
    field = np.exp(g[0] * k[:, None, None] + g[1] * j[None, :, None] + g[2] * i[None, None, :])
    return _replace(volume, volume.array * field)


def cropped(volume: Volume, keep: float) -> Volume:
    """The central ``keep`` share of rows and columns: the field of view cuts the head."""
    geometry = volume.geometry
    _, rows, cols = geometry.shape
    r0, c0 = int(rows * (1 - keep) / 2), int(cols * (1 - keep) / 2)
    r1, c1 = rows - r0, cols - c0
    origin = np.asarray(geometry.origin) + (
        r0 * geometry.spacing[1] * np.asarray(geometry.column_direction)
        + c0 * geometry.spacing[2] * np.asarray(geometry.row_direction)
    )
    moved = Geometry(
        origin=(float(origin[0]), float(origin[1]), float(origin[2])),
        row_direction=geometry.row_direction,
        column_direction=geometry.column_direction,
        slice_direction=geometry.slice_direction,
        spacing=geometry.spacing,
        shape=(geometry.shape[0], r1 - r0, c1 - c0),
    )
    return _replace(volume, volume.array[:, r0:r1, c0:c1], moved)


def padded(volume: Volume, factor: float, rng: np.random.Generator) -> Volume:
    """The field of view grown ``factor`` times in plane with background noise, so the
    head fills a small part of it."""
    geometry = volume.geometry
    depth, rows, cols = geometry.shape
    big_r, big_c = int(rows * factor), int(cols * factor)
    r0, c0 = (big_r - rows) // 2, (big_c - cols) // 2
    floor = float(np.percentile(volume.array, 5))
    canvas = np.abs(rng.normal(0, max(floor, 1.0), (depth, big_r, big_c))).astype(np.float32)
    canvas[:, r0 : r0 + rows, c0 : c0 + cols] = volume.array
    origin = np.asarray(geometry.origin) - (
        r0 * geometry.spacing[1] * np.asarray(geometry.column_direction)
        + c0 * geometry.spacing[2] * np.asarray(geometry.row_direction)
    )
    moved = Geometry(
        origin=(float(origin[0]), float(origin[1]), float(origin[2])),
        row_direction=geometry.row_direction,
        column_direction=geometry.column_direction,
        slice_direction=geometry.slice_direction,
        spacing=geometry.spacing,
        shape=(depth, big_r, big_c),
    )
    return _replace(volume, canvas, moved)


def jpeg2000(volume: Volume, ratio: float) -> Volume:
    """Lossy JPEG 2000 round trip of every slice at compression ``ratio`` (as a PACS
    that stores with JPEG 2000 lossy would), on 12-bit unsigned stored values."""
    x = volume.array
    lo, hi = float(x.min()), float(x.max())
    step = max((hi - lo) / 4095.0, 1e-6)
    stored = np.rint((x - lo) / step).astype(np.uint16)
    encoder = get_encoder(JPEG2000)
    rows, columns = stored.shape[1:]
    out = np.empty_like(stored)
    for k, plane in enumerate(stored):
        data = encoder.encode(
            np.ascontiguousarray(plane),
            rows=rows,
            columns=columns,
            samples_per_pixel=1,
            bits_allocated=16,
            bits_stored=12,
            pixel_representation=0,
            photometric_interpretation="MONOCHROME2",
            number_of_frames=1,
            j2k_cr=[ratio],
        )
        out[k] = openjpeg.decode(data)
    return _replace(volume, out.astype(np.float32) * step + lo)


def _grid(geometry: Geometry) -> FloatArray:
    """Patient positions (k, j, i, 3) of a geometry's voxels relative to its centre."""
    k, j, i = np.meshgrid(*(np.arange(n, dtype=np.float32) for n in geometry.shape), indexing="ij")
    a = geometry.affine
    points = np.stack([a[d, 0] * k + a[d, 1] * j + a[d, 2] * i + a[d, 3] for d in range(3)], -1)
    centre = points[tuple(n // 2 for n in geometry.shape)]
    return (points - centre).astype(np.float32)


def phantom(geometry: Geometry, rng: np.random.Generator, inserts: int = 0) -> Volume:
    """A QA test object: a uniform sphere or cylinder of water-like signal in air, with
    scanner noise and a mild bias field, and ``inserts`` small rods of other signal."""
    p = _grid(geometry)
    radius = float(rng.uniform(70.0, 100.0))
    if rng.uniform() < 0.5:
        inside = np.linalg.norm(p, axis=-1) <= radius
    else:
        inside = (np.hypot(p[..., 0], p[..., 1]) <= radius) & (np.abs(p[..., 2]) <= 90.0)
    signal = np.where(inside, 1.0, 0.0).astype(np.float32)
    for _ in range(inserts):
        at = rng.uniform(-0.6, 0.6, size=2) * radius
        rod = np.hypot(p[..., 0] - at[0], p[..., 1] - at[1]) <= rng.uniform(6.0, 15.0)
        signal[rod & inside] = rng.uniform(0.2, 1.8)
    signal = ndimage.gaussian_filter(signal, 0.7) * float(rng.uniform(300.0, 3000.0))
    volume = Volume(signal, geometry)
    biased = with_bias(volume, rng, float(rng.uniform(0.0, 0.2)))
    return with_noise(biased, rng, float(rng.uniform(0.01, 0.05)))


def pure_noise(geometry: Geometry, rng: np.random.Generator) -> Volume:
    """Rician (magnitude of complex Gaussian) or Gaussian noise and nothing else."""
    sigma = float(rng.uniform(5.0, 200.0))
    shape = geometry.shape
    if rng.uniform() < 0.5:
        array = np.hypot(rng.normal(0, sigma, shape), rng.normal(0, sigma, shape))
    else:
        array = rng.normal(3 * sigma, sigma, shape)
    return Volume(np.asarray(array, dtype=np.float32), geometry)


def nearly_empty(geometry: Geometry, rng: np.random.Generator) -> Volume:
    """A dark noisy field of view with a few bright voxels (or a speck) in it."""
    shape = geometry.shape
    array = np.abs(rng.normal(0, float(rng.uniform(1.0, 10.0)), shape)).astype(np.float32)
    count = int(rng.integers(1, 40))
    spots = tuple(rng.integers(0, n, size=count) for n in shape)
    array[spots] = float(rng.uniform(500.0, 3000.0))
    if rng.uniform() < 0.5:
        k, j, i = (int(rng.integers(2, n - 2)) if n > 4 else 0 for n in shape)
        array[k, j - 1 : j + 2, i - 1 : i + 2] = float(rng.uniform(500.0, 3000.0))
    return Volume(array, geometry)


def variants(
    volume: Volume, rng: np.random.Generator, contrast: str = "T1"
) -> Iterator[tuple[str, str, Volume]]:
    """(kind, parameters, volume): an MR volume of ``contrast`` as simulated, then with
    more noise, a stronger bias field, a cropped and a padded field of view, and
    through lossy JPEG 2000 — each change alone."""
    yield f"{contrast} as simulated", "", volume
    level = float(rng.uniform(0.01, 0.05))
    yield f"{contrast} more noise", f"{level:.3f} of p99", with_noise(volume, rng, level)
    strength = float(rng.uniform(0.1, 0.4))
    yield f"{contrast} more bias", f"{strength:.2f}", with_bias(volume, rng, strength)
    keep = float(rng.uniform(0.6, 0.85))
    yield f"{contrast} cropped FOV", f"to {keep:.2f}", cropped(volume, keep)
    room = np.sqrt(PADDED_VOXELS / volume.array.size)
    factor = float(min(rng.uniform(1.5, 3.0), max(room, 1.2)))
    yield f"{contrast} padded FOV", f"x{factor:.1f}", padded(volume, factor, rng)
    ratio = float(rng.uniform(10.0, 30.0))
    yield f"{contrast} JPEG 2000 lossy", f"{ratio:.0f}:1", jpeg2000(volume, ratio)


def subject_at_random_acquisition(
    seed: int, fast: bool = False
) -> tuple[Subject, dict[str, Volume], str, np.random.Generator]:
    """Seed → simulated subject at its random acquisition, its T1w and T2w at its random
    in-plane spacing, a tag naming both, and the case's random generator."""
    rng = np.random.default_rng(seed + 7_000_000)
    acquisition = random_acquisition(rng, fast=fast)
    subject = simulate_subject(seed, acquisition)
    spacing = float(rng.uniform(1.5, 2.5) if fast else rng.uniform(0.5, 1.5))
    mr = {role: resampled_in_plane(subject.images[role], spacing) for role in ("T1", "T2")}
    tilt = "/".join(f"{t:.0f}" for t in acquisition.tilt_degrees)
    thickness = acquisition.slice_thickness_mm
    return subject, mr, f"seed {seed}, {spacing:.2f} mm x {thickness:.1f} mm, tilt {tilt} deg", rng


def t1_cases(seeds: Iterable[int], fast: bool = False) -> Iterator[Case]:
    """Only the cases to accept of :func:`labelled_cases` (the same volumes): a
    reference for fitting a T1 guard."""
    for seed in seeds:
        _, mr, tag, rng = subject_at_random_acquisition(seed, fast)
        for kind, detail, volume in variants(mr["T1"], rng):
            yield Case(kind, f"{kind} {detail} ({tag})", volume, True)


def labelled_cases(seeds: Iterable[int], fast: bool = False) -> Iterator[Case]:
    """For each seed: one simulated subject at a random acquisition, its T1w in every
    variant (to accept), its T2w in every variant and its CT (to refuse), and on the
    same grid a phantom, a phantom with inserts, pure noise and a nearly empty series
    (to refuse). The T2w variants are all of kind ``T2 labelled T1``, the variant named
    in the case's name.

    ``fast``: in-plane spacing 1.5–2.5 mm and slices 3–6 mm, for tests."""
    for seed in seeds:
        subject, mr, tag, rng = subject_at_random_acquisition(seed, fast)
        for kind, detail, volume in variants(mr["T1"], rng):
            yield Case(kind, f"{kind} {detail} ({tag})", volume, True)
        for kind, detail, volume in variants(mr["T2"], rng, "T2"):
            yield Case("T2 labelled T1", f"{kind} {detail} ({tag})", volume, False)
        geometry = mr["T1"].geometry
        refused = {
            "CT labelled MR": subject.images["CT"],
            "phantom": phantom(geometry, rng),
            "phantom with inserts": phantom(geometry, rng, inserts=4),
            "pure noise": pure_noise(geometry, rng),
            "nearly empty": nearly_empty(geometry, rng),
        }
        for kind, volume in refused.items():
            yield Case(kind, f"{kind} ({tag})", volume, False)
