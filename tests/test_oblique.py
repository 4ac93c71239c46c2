"""Oblique inputs: a series tilted beyond what its model's card says the model was
trained on is resampled onto a grid in the model's plane, and the output back onto the
source slices; below that tilt nothing is resampled. A 30° oblique T1 of a simulated
head gets from the shipped reference model, inside the head, the axial run's CT."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from inference.geometry import Geometry, Volume
from inference.oblique import MARGIN_VOXELS, obliquity_degrees, plane_grid
from inference.predict import translate
from inference.registry import LoadedModel, load_model, load_registry
from inference.reorient import Reorientation, translate_in_plane
from inference.resample import onto_grid
from inference.training.simulate import (
    Acquisition,
    Subject,
    Waves,
    draw_anatomy,
    mr_image,
    subject_from,
)
from onnx_models import conv1x1_model, linear_card

MODELS = Path(__file__).resolve().parents[1] / "models"
SMALL = Acquisition(pixel_spacing_mm=3.0, slice_thickness_mm=6.0, rows=88, columns=80)


def _tilted(geometry: Geometry, degrees: float, axis: tuple[float, float, float]) -> Geometry:
    """``geometry`` turned by ``degrees`` about ``axis`` through its centre."""
    a = np.asarray(axis, dtype=float) / np.linalg.norm(axis)
    t = np.radians(degrees)
    cross = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    turn = np.eye(3) + np.sin(t) * cross + (1 - np.cos(t)) * (cross @ cross)
    centre = geometry.affine @ np.asarray([*((np.asarray(geometry.shape) - 1) / 2), 1.0])
    row, column, normal = (
        turn @ np.asarray(d)
        for d in (geometry.row_direction, geometry.column_direction, geometry.slice_direction)
    )
    half = (np.asarray(geometry.shape) - 1) / 2 * np.asarray(geometry.spacing)
    origin = centre[:3] - normal * half[0] - column * half[1] - row * half[2]

    def vec(v: np.ndarray) -> tuple[float, float, float]:
        return (float(v[0]), float(v[1]), float(v[2]))

    return Geometry(
        origin=vec(origin),
        row_direction=vec(row),
        column_direction=vec(column),
        slice_direction=vec(normal),
        spacing=geometry.spacing,
        shape=geometry.shape,
    )


AXIAL = Geometry(
    origin=(-40.0, -50.0, -30.0),
    row_direction=(1.0, 0.0, 0.0),
    column_direction=(0.0, 1.0, 0.0),
    slice_direction=(0.0, 0.0, 1.0),
    spacing=(2.0, 2.0, 2.0),
    shape=(16, 20, 18),
)


@pytest.mark.parametrize("axis", [(1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (1.0, 1.0, 0.0)])
def test_obliquity_is_the_tilt_of_the_slice_normal_whichever_way_slices_run(
    axis: tuple[float, float, float],
) -> None:
    assert obliquity_degrees(_tilted(AXIAL, 30.0, axis), "axial") == pytest.approx(30.0)
    assert obliquity_degrees(_tilted(AXIAL, 150.0, axis), "axial") == pytest.approx(30.0)
    assert obliquity_degrees(AXIAL, "sagittal") == pytest.approx(90.0)


def test_the_plane_grid_lies_in_the_plane_and_holds_every_source_voxel_inside_a_margin() -> None:
    source = _tilted(AXIAL, 30.0, (1.0, 0.0, 0.0))
    grid = plane_grid(source, "axial", (1.5, 1.25))
    assert grid.row_direction == (1.0, 0.0, 0.0) and grid.column_direction == (0.0, 1.0, 0.0)
    assert grid.spacing == (2.0, 1.5, 1.25)  # the source's slice spacing; the card's pixels
    corners = np.asarray([[k, j, i, 1.0] for k in (0, 15) for j in (0, 19) for i in (0, 17)])
    inside = (np.linalg.inv(grid.affine) @ source.affine @ corners.T)[:3]
    assert inside.min() >= MARGIN_VOXELS - 1e-9
    assert np.all(inside.max(axis=1) <= np.asarray(grid.shape) - 1 - MARGIN_VOXELS + 1e-9)
    assert plane_grid(source, "axial", None).spacing == (2.0, 2.0, 2.0)


class _RecordingSession:
    """Passes runs through to the real session and records the input tensors' shapes."""

    def __init__(self, session: Any) -> None:
        self._session = session
        self.shapes: list[tuple[int, ...]] = []

    def run(self, outputs: Any, feeds: dict[str, np.ndarray]) -> Any:
        self.shapes.extend(tuple(v.shape) for v in feeds.values())
        return self._session.run(outputs, feeds)

    def get_inputs(self) -> Any:
        return self._session.get_inputs()


def _identity(tmp_path: Path, max_obliquity: float | None) -> tuple[LoadedModel, _RecordingSession]:
    card = linear_card(value_range=(-1024.0, 30000.0))
    card = card.model_copy(update={"max_obliquity_degrees": max_obliquity})
    model = load_model(
        conv1x1_model(tmp_path / "identity.onnx", card, [1.0], 0.0),
        ["CPUExecutionProvider"],
        intra_op_threads=1,
    )
    spy = _RecordingSession(model.session)
    return replace(model, session=spy), spy


def _linear_in_patient_space(geometry: Geometry) -> Volume:
    """5000 + 10·x + 20·y + 30·z (mm) at every voxel: trilinear resampling keeps it."""
    index = np.stack(np.meshgrid(*[np.arange(n) for n in geometry.shape], indexing="ij"))
    offset = geometry.affine[:3, 3].reshape(3, 1, 1, 1)
    points = np.tensordot(geometry.affine[:3, :3], index, axes=1) + offset
    values = 5000 + 10 * points[0] + 20 * points[1] + 30 * points[2]
    return Volume(values.astype(np.float32), geometry)


def test_beyond_the_cards_obliquity_the_model_runs_in_the_plane_and_the_output_lands_on_the_source(
    tmp_path: Path,
) -> None:
    source = _linear_in_patient_space(_tilted(AXIAL, 30.0, (1.0, 0.0, 0.0)))
    model, spy = _identity(tmp_path, 20.0)
    out = translate_in_plane(model, [source])
    grid = plane_grid(source.geometry, "axial", None)
    assert {shape[2:] for shape in spy.shapes} == {grid.shape[1:]}
    assert sum(shape[0] for shape in spy.shapes) == grid.shape[0]  # every plane slice, once
    assert out.geometry == source.geometry
    interior = (slice(2, -2),) * 3  # nearer the edge, plane voxels outside the source count
    np.testing.assert_allclose(out.array[interior], source.array[interior], atol=0.05)


@pytest.mark.parametrize("limit", [None, 35.0])
def test_within_the_cards_obliquity_nothing_is_resampled(
    tmp_path: Path, limit: float | None
) -> None:
    source = _linear_in_patient_space(_tilted(AXIAL, 30.0, (1.0, 0.0, 0.0)))
    model, spy = _identity(tmp_path, limit)
    out = translate_in_plane(model, [source])
    assert {shape[2:] for shape in spy.shapes} == {source.geometry.shape[1:]}
    np.testing.assert_array_equal(out.array, source.array)
    assert out.geometry == source.geometry


def test_a_sagittal_series_is_permuted_not_resampled_and_its_tilt_measured_after(
    tmp_path: Path,
) -> None:
    sagittal = Reorientation.into(AXIAL, "sagittal").apply(_linear_in_patient_space(AXIAL))
    model, _ = _identity(tmp_path, 10.0)
    out = translate_in_plane(model, [sagittal])
    np.testing.assert_array_equal(out.array, sagittal.array)  # no interpolation anywhere


def _t1_on(seed: int, geometry: Geometry) -> tuple[Volume, Subject]:
    """The simulator's T1 of head ``seed`` acquired on ``geometry``, with its truth: the
    same anatomy, bias field and contrast whatever the grid (only the noise differs)."""
    rng = np.random.default_rng(seed)
    anatomy = draw_anatomy(rng)
    fractions, inside, centres = anatomy.sample(geometry, depths=3)
    bias = np.exp(Waves(rng, amplitude=0.12, count=4)(centres)).astype(np.float32)
    t1 = mr_image(fractions, anatomy.tissues, "T1", bias, rng)
    subject = subject_from(seed, geometry, {}, fractions, inside, anatomy.tissues, bias)
    return Volume(t1, geometry), subject


def _within(inner: Geometry, outer: Geometry) -> np.ndarray:
    """Voxels of ``inner`` at least one voxel inside ``outer``'s volume."""
    index = np.stack(np.meshgrid(*[np.arange(n) for n in inner.shape], indexing="ij"), -1)
    homogeneous = np.concatenate([index, np.ones((*inner.shape, 1))], axis=-1)
    ijk = homogeneous @ (np.linalg.inv(outer.affine) @ inner.affine).T
    upper = np.asarray(outer.shape) - 2
    return np.all((ijk[..., :3] >= 1) & (ijk[..., :3] <= upper), axis=-1)


def test_a_30_degree_oblique_t1_gets_the_axial_runs_ct_inside_the_head() -> None:
    """The reference is the axial run's CT resampled onto the oblique grid. At SMALL's
    6 mm slices both paths interpolate twice across slices tilted by 30°, which smears
    bone and air edges by hundreds of HU in a thin shell (measured: mean 61 HU, 95th
    percentile 342 HU, median 2 HU over 57,000 head voxels; the permutation-only path
    gives 59 HU); the bulk agrees within a few HU. So: median below 10 HU, mean below
    90 HU."""
    model = load_registry(MODELS, ["CPUExecutionProvider"]).models["mr-t1-to-ct"]
    model = replace(model, card=model.card.model_copy(update={"max_obliquity_degrees": 20.0}))
    axial = SMALL.geometry()
    oblique = _tilted(axial, 30.0, (1.0, 0.0, 0.0))
    axial_t1, _ = _t1_on(1000, axial)
    oblique_t1, truth = _t1_on(1000, oblique)

    ct = translate_in_plane(model, [oblique_t1])

    assert ct.geometry == oblique_t1.geometry
    reference = onto_grid(translate(model, [axial_t1]), oblique)
    head = truth.head & _within(oblique, axial)
    error = np.abs(ct.array - reference.array)[head]
    assert head.sum() > 40_000
    assert np.median(error) < 10.0 and error.mean() < 90.0
