"""Any orientation in: a series is reoriented into its model's plane by permuting voxel
axes, and the output lands back on the source grid. A sagittal and a coronal T1 of a
simulated head get, from the shipped 2.5D reference model, the synthetic CT of the axial
run on the same head — through the node too."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pytest
from conftest import sends_to
from sqlalchemy import select

from dicom_node.cli.main import main as cli
from dicom_node.runtime.node import Node
from factories import StudySpec, axial_series, rotated_orientation, write_series
from inference.geometry import Geometry, Volume
from inference.predict import translate
from inference.registry import load_registry
from inference.reorient import Reorientation, translate_in_plane
from inference.training.simulate import Acquisition, simulate_subject
from peers import free_port, wait_until
from storage.models import Job, JobState, OutputSeries
from storage.spool import output_instance_key

MODELS = Path(__file__).resolve().parents[1] / "models"
SMALL = Acquisition(pixel_spacing_mm=3.0, slice_thickness_mm=6.0, rows=88, columns=80)


def _grid(row: tuple[float, ...], col: tuple[float, ...], shape: tuple[int, int, int]) -> Geometry:
    normal = np.cross(row, col)
    return Geometry(
        origin=(10.0, -20.0, 30.0),
        row_direction=(row[0], row[1], row[2]),
        column_direction=(col[0], col[1], col[2]),
        slice_direction=(float(normal[0]), float(normal[1]), float(normal[2])),
        spacing=(2.0, 0.5, 0.75),
        shape=shape,
    )


ORIENTATIONS = {
    "axial": ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0)),
    "axial-feet-first": ((-1.0, 0.0, 0.0), (0.0, 1.0, 0.0)),
    "sagittal": ((0.0, 1.0, 0.0), (0.0, 0.0, -1.0)),
    "coronal": ((1.0, 0.0, 0.0), (0.0, 0.0, -1.0)),
    "oblique-sagittal": tuple(
        tuple(v) for v in np.reshape(rotated_orientation(20, (0, 1, 1)), (2, 3))[::-1]
    ),
}


@pytest.mark.parametrize("name", ORIENTATIONS)
@pytest.mark.parametrize("plane", ["axial", "coronal", "sagittal"])
def test_reorienting_keeps_every_voxel_where_it_is_and_undoes_exactly(
    name: str, plane: str
) -> None:
    row, col = ORIENTATIONS[name]
    source = Volume(
        np.random.default_rng(0).random((5, 6, 7), dtype=np.float32), _grid(row, col, (5, 6, 7))
    )
    turn = Reorientation.into(source.geometry, plane)
    turned = turn.apply(source)
    for index in [(0, 0, 0), (4, 5, 6), (2, 1, 3), (1, 4, 0)]:
        position = source.geometry.affine @ np.asarray([*index, 1.0])
        k, j, i = np.rint(np.linalg.inv(turned.geometry.affine) @ position)[:3].astype(int)
        assert turned.array[k, j, i] == source.array[index]
    normal = {"axial": 2, "coronal": 1, "sagittal": 0}[plane]
    assert abs(turned.geometry.slice_direction[normal]) >= 1 / np.sqrt(2) - 1e-9
    back = turn.undo(turned)
    assert np.array_equal(back.array, source.array) and back.geometry == source.geometry


def test_an_axial_series_in_an_axial_model_is_left_as_it_is() -> None:
    geometry = _grid((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (3, 4, 5))
    assert Reorientation.into(geometry, "axial").identity
    assert Reorientation.into(_grid((0.0, 1.0, 0.0), (0.0, 0.0, -1.0), (3, 4, 5)), "any").identity


@pytest.fixture(scope="module")
def head() -> Volume:
    return simulate_subject(1000, SMALL).images["T1"]


def _in_plane(volume: Volume, plane: str) -> Volume:
    """The same voxels as a series acquired in ``plane``."""
    return Reorientation.into(volume.geometry, plane).apply(volume)


@pytest.mark.parametrize("plane", ["sagittal", "coronal"])
def test_the_reference_model_gives_the_axial_runs_ct_for_a_sagittal_or_coronal_series(
    head: Volume, plane: str
) -> None:
    model = load_registry(MODELS, ["CPUExecutionProvider"]).models["mr-t1-to-ct"]
    assert model.card.plane == "axial"
    axial_ct = translate(model, [head])
    series = _in_plane(head, plane)
    ct = translate_in_plane(model, [series])
    assert ct.geometry == series.geometry
    assert np.allclose(ct.array, _in_plane(axial_ct, plane).array, atol=1e-3)
    unturned = translate(model, [series])  # what the node did before: slice by slice
    assert np.abs(unturned.array - ct.array).mean() > 10, "orientation matters to this model"


def _series_of(volume: Volume, study: StudySpec, description: str, number: int) -> list:  # type: ignore[type-arg]
    g = volume.geometry
    stored = np.clip(np.rint(volume.array), 0, 65535).astype(np.uint16)
    return axial_series(
        study,
        stored,
        description=description,
        spacing=g.spacing,
        origin=g.origin,
        orientation=(*g.row_direction, *g.column_direction),
        series_number=number,
    )


def test_a_sagittal_t1_through_the_node_gets_the_axial_runs_ct_on_its_own_slices(
    tmp_path: Path, head: Volume, node_factory: Callable[..., Node]
) -> None:
    models = tmp_path / "models"
    models.mkdir()
    (models / "mr-t1-to-ct.onnx").symlink_to(MODELS / "mr-t1-to-ct.onnx")
    node = node_factory(
        {
            **sends_to(free_port()),
            "synthetic": {"invisible_watermark": False},
            "node": {"stable_seconds": 5.0},
        }
    )  # the destination is down: the outputs stay in the node's spool, where they are read;
    # a study counts as whole after 5 s without an instance (1 s let a loaded machine's
    # pause mid-series route a partial sagittal series, and the grown study a second job)
    axial, sagittal = StudySpec(), StudySpec()
    paths = write_series(_series_of(head, axial, "t1_mprage_tra", 2), tmp_path / "axial")
    paths += write_series(
        _series_of(_in_plane(head, "sagittal"), sagittal, "t1_mprage_sag", 2), tmp_path / "sag"
    )
    assert cli(["--config", str(tmp_path / "config.yaml"), "send", *map(str, paths)]) == 0

    def done() -> bool:
        with node.db.session() as session:
            states = list(session.scalars(select(Job.state)))
            return states == [JobState.DONE] * 2

    wait_until(done, 120, what="both synthetic CTs")
    by_position: dict[str, dict[tuple[float, ...], np.ndarray]] = {}
    with node.db.session() as session:
        for output in session.scalars(select(OutputSeries)):
            outputs = by_position.setdefault(output.study_uid, {})
            for index in range(output.instance_count):
                ds = pydicom.dcmread(node.spool.path(output_instance_key(output.spool_key, index)))
                outputs[tuple(round(float(v), 2) for v in ds.ImagePositionPatient)] = ds
    axial_ct, sagittal_ct = by_position[axial.study_uid], by_position[sagittal.study_uid]
    assert len(sagittal_ct) == head.geometry.shape[2]  # one per sagittal slice
    first = next(iter(sagittal_ct.values()))
    assert [float(v) for v in first.ImageOrientationPatient] == [0.0, 1.0, 0.0, 0.0, 0.0, -1.0]
    axial_volume = np.stack(
        [axial_ct[key].pixel_array for key in sorted(axial_ct, key=lambda p: p[2])]
    )
    expected = _in_plane(Volume(axial_volume.astype(np.float32), head.geometry), "sagittal").array
    for k, key in enumerate(sorted(sagittal_ct, key=lambda p: -p[0])):
        assert np.array_equal(sagittal_ct[key].pixel_array, expected[k])
