"""The input guard and the uncertainty figures in the node, against a real Orthanc: a
`refuse` route fails the job and sends nothing, `warn` sends a marked output, `off`
does not judge; every output records its uncertainty, `dicom-node verify` shows it, and
a route may ask for the uncertainty map as a series of its own."""

from __future__ import annotations

import json
import logging
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from conftest import sends_to
from pydicom.dataset import Dataset
from sqlalchemy import select

from dicom_node.cli.main import main as cli
from dicom_node.dicom.uids import uncertainty_series_uid
from dicom_node.evidence.provenance import ProvenanceRecord, read_private_block
from dicom_node.runtime.node import Node
from factories import StudySpec, axial_series, valid_ds, write_series
from inference.card import RoleGuard
from inference.geometry import Volume
from inference.training.guard_fit import write_guards
from inference.training.simulate import Acquisition, simulate_subject
from onnx_models import conv1x1_model, linear_card, neighbour_model
from peers import Orthanc, dciodvfy_errors, free_port, stored_ok, storescu, wait_until
from storage.models import AuditEvent, Delivery, Job, JobState, OutputSeries

pytestmark = pytest.mark.integration

ACQUISITION = Acquisition(pixel_spacing_mm=2.0, slice_thickness_mm=5.0, rows=120, columns=110)


def _models(folder: Path, guard: RoleGuard | None) -> Path:
    """`mr-t1-to-ct` (HU = 2·T1 − 1000), with the T1 guard in its card when given."""
    folder.mkdir(parents=True, exist_ok=True)
    path = conv1x1_model(folder / "mr-t1-to-ct.onnx", linear_card(), [2.0], -1000.0)
    if guard is not None:
        write_guards(path, {"T1": guard})
    return folder


def _series(study: StudySpec, volume: Volume, description: str) -> list[Dataset]:
    geometry = volume.geometry
    stored = np.clip(np.rint(volume.array), 0, 65535).astype(np.uint16)
    return valid_ds(
        axial_series(
            study, stored, description=description, spacing=geometry.spacing, origin=geometry.origin
        )
    )


def _node(
    tmp_path: Path,
    orthanc_factory: Callable[..., Orthanc],
    node_factory: Callable[..., Node],
    route: dict[str, Any],
    guard: RoleGuard | None,
) -> tuple[Orthanc, Node]:
    _models(tmp_path / "models", guard)
    pacs = orthanc_factory()
    overrides = sends_to(pacs.dicom_port)
    overrides["routes"] = [{**overrides["routes"][0], **route}]
    node = node_factory({"node": {"port": free_port()}, **overrides})
    return pacs, node


def _send(node: Node, datasets: list[Dataset], folder: Path) -> None:
    paths = write_series(datasets, folder)
    assert node.address is not None
    result = storescu("127.0.0.1", node.address[1], "DICOMNODE", paths)
    assert stored_ok(result) == len(paths), result.stdout + result.stderr


def _output_in_pacs(pacs: Orthanc, study_uid: str, folder: Path) -> list[Path]:
    def ready() -> list[dict[str, Any]] | None:
        series = [
            s for s in pacs.series_of_study(study_uid) if s["MainDicomTags"]["Modality"] == "CT"
        ]
        return series if series and len(series[0]["Instances"]) == ACQUISITION.slices else None

    series = wait_until(ready, 90, what="the synthetic CT in the PACS")
    folder.mkdir()
    return [pacs.download(i, folder / f"{n}.dcm") for n, i in enumerate(series[0]["Instances"])]


def _provenance(path: Path) -> ProvenanceRecord:
    record = read_private_block(pydicom.dcmread(path))
    assert record is not None
    return record


def _dcmsign_ok(path: Path, certificate: Path) -> bool:
    result = subprocess.run(
        ["dcmsign", "--verify", "+cf", str(certificate), str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return result.returncode == 0 and "Signature Verification : OK" in result.stdout + result.stderr


def _verify(config: Path, path: Path, capsys: pytest.CaptureFixture[str]) -> str:
    capsys.readouterr()
    assert cli(["--config", str(config), "verify", str(path)]) == 0
    return capsys.readouterr().out


@pytest.fixture(scope="module")
def heads() -> dict[str, Volume]:
    """One new simulated head (a seed the guard was not fitted on): its T1w and T2w."""
    subject = simulate_subject(500, ACQUISITION)
    return {"T1": subject.images["T1"], "T2": subject.images["T2"]}


def test_refuse_route_fails_the_job_naming_series_score_and_threshold_and_sends_nothing(
    tmp_path: Path,
    orthanc_factory: Callable[..., Orthanc],
    node_factory: Callable[..., Node],
    t1_guard: RoleGuard,
    heads: dict[str, Volume],
    caplog: pytest.LogCaptureFixture,
) -> None:
    pacs, node = _node(tmp_path, orthanc_factory, node_factory, {}, t1_guard)
    study = StudySpec()
    t2_labelled_t1 = _series(study, heads["T2"], "T1 MPRAGE")
    series_uid = str(t2_labelled_t1[0].SeriesInstanceUID)

    with caplog.at_level(logging.INFO, logger="dicom_node"):
        _send(node, t2_labelled_t1, tmp_path / "in")

        def failed() -> Job | None:
            with node.db.session() as session:
                job = session.scalar(select(Job))
                return job if job is not None and job.state == JobState.FAILED else None

        job = wait_until(failed, 60, what="the job to fail")

    assert job.attempts == 1, "a refusal is not retried"
    error = job.error or ""
    assert f"series {series_uid} (role T1)" in error
    assert "mr-t1-to-ct@1.0.0" in error
    score = float(error.split("score ")[1].split()[0])
    recorded = round(t1_guard.threshold, 3)  # the provenance record keeps 3 decimals
    assert f"threshold {recorded:.2f}" in error and score > t1_guard.threshold
    events = [r for r in caplog.records if r.getMessage() == "job.input_refused"]
    assert len(events) == 1
    fields = events[0].fields  # type: ignore[attr-defined]
    assert fields["series_uid"] == series_uid and fields["role"] == "T1"
    assert fields["score"] > fields["threshold"]
    with node.db.session() as session:
        assert session.scalars(select(OutputSeries)).all() == []
        assert session.scalars(select(Delivery)).all() == []
        kinds = [e.kind for e in session.scalars(select(AuditEvent))]
    assert "job.failed" in kinds and "series.synthesized" not in kinds
    assert pacs.series_of_study(study.study_uid) == []


def test_refuse_route_synthesizes_a_t1_head_and_records_the_accepted_assessment(
    tmp_path: Path,
    orthanc_factory: Callable[..., Orthanc],
    node_factory: Callable[..., Node],
    t1_guard: RoleGuard,
    heads: dict[str, Volume],
    capsys: pytest.CaptureFixture[str],
) -> None:
    pacs, node = _node(tmp_path, orthanc_factory, node_factory, {}, t1_guard)
    study = StudySpec()
    t1 = _series(study, heads["T1"], "T1 MPRAGE")
    _send(node, t1, tmp_path / "in")

    outputs = _output_in_pacs(pacs, study.study_uid, tmp_path / "out")

    record = _provenance(outputs[0])
    assert record.input_guard is not None and record.input_guard.mode == "refuse"
    (assessment,) = record.input_guard.inputs
    assert assessment.accepted and assessment.series_uid == t1[0].SeriesInstanceUID
    assert assessment.score <= assessment.threshold == round(t1_guard.threshold, 3)
    assert assessment.reference_cases == t1_guard.reference_cases
    assert record.uncertainty is not None
    assert record.uncertainty.passes == ("identity", "mirror-columns")
    assert record.uncertainty.units == "HU" and record.uncertainty.region == "output above -500 HU"
    assert record.uncertainty.mean == 0.0 and record.uncertainty.p95 == 0.0, "1×1 model"
    ds = pydicom.dcmread(outputs[0])
    assert "[INPUT OOD]" not in ds.SeriesDescription
    assert "OUT OF DISTRIBUTION" not in ds.ImageComments
    text = _verify(tmp_path / "config.yaml", outputs[0], capsys)
    assert f"input guard (refuse): T1 series {assessment.series_uid} accepted" in text
    assert "uncertainty: spread inside the head mean 0 HU, 95th percentile 0 HU" in text


def test_warn_route_sends_a_marked_output_with_the_assessment_and_a_valid_signature(
    tmp_path: Path,
    orthanc_factory: Callable[..., Orthanc],
    node_factory: Callable[..., Node],
    t1_guard: RoleGuard,
    heads: dict[str, Volume],
    signing_keys: tuple[Path, Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    pacs, node = _node(tmp_path, orthanc_factory, node_factory, {"input_guard": "warn"}, t1_guard)
    study = StudySpec()
    t2_labelled_t1 = _series(study, heads["T2"], "T1 MPRAGE")
    _send(node, t2_labelled_t1, tmp_path / "in")

    outputs = _output_in_pacs(pacs, study.study_uid, tmp_path / "out")

    for path in (outputs[0], outputs[-1]):
        ds = pydicom.dcmread(path)
        assert ds.SeriesDescription.startswith("SYNTHETIC CT [INPUT OOD] from T1 MPRAGE")
        assert ds.ImageComments.endswith("- INPUT OUT OF DISTRIBUTION")
        assert ds.SyntheticData == "YES"
        assert _dcmsign_ok(path, signing_keys[1])
        assert dciodvfy_errors(path) == []
    record = _provenance(outputs[0])
    assert record.input_guard is not None and record.input_guard.mode == "warn"
    (assessment,) = record.input_guard.inputs
    assert not assessment.accepted and assessment.score > assessment.threshold
    text = _verify(tmp_path / "config.yaml", outputs[0], capsys)
    assert "signature: valid, trusted" in text
    assert "accepted" not in text and "T1 series" in text and "OUT OF DISTRIBUTION" in text


def test_off_route_does_not_judge_and_a_route_may_skip_the_uncertainty(
    tmp_path: Path,
    orthanc_factory: Callable[..., Orthanc],
    node_factory: Callable[..., Node],
    t1_guard: RoleGuard,
    heads: dict[str, Volume],
    capsys: pytest.CaptureFixture[str],
) -> None:
    route = {"input_guard": "off", "uncertainty": False}
    pacs, node = _node(tmp_path, orthanc_factory, node_factory, route, t1_guard)
    study = StudySpec()
    _send(node, _series(study, heads["T2"], "T1 MPRAGE"), tmp_path / "in")

    outputs = _output_in_pacs(pacs, study.study_uid, tmp_path / "out")

    record = _provenance(outputs[0])
    assert record.input_guard is None and record.uncertainty is None
    assert "[INPUT OOD]" not in pydicom.dcmread(outputs[0]).SeriesDescription
    text = _verify(tmp_path / "config.yaml", outputs[0], capsys)
    assert "input guard: off" in text and "uncertainty: not estimated" in text


def test_a_model_without_a_guard_runs_and_its_provenance_says_none_was_available(
    tmp_path: Path,
    orthanc_factory: Callable[..., Orthanc],
    node_factory: Callable[..., Node],
    heads: dict[str, Volume],
    capsys: pytest.CaptureFixture[str],
) -> None:
    pacs, node = _node(tmp_path, orthanc_factory, node_factory, {}, None)
    study = StudySpec()
    _send(node, _series(study, heads["T2"], "T1 MPRAGE"), tmp_path / "in")

    outputs = _output_in_pacs(pacs, study.study_uid, tmp_path / "out")

    record = _provenance(outputs[0])
    assert record.input_guard is not None
    assert (record.input_guard.mode, record.input_guard.available) == ("refuse", False)
    assert record.input_guard.inputs == ()
    with node.db.session() as session:
        stored = session.scalars(select(OutputSeries)).one().provenance
    assert stored["input_guard"] == {"mode": "refuse", "available": False, "inputs": []}
    text = _verify(tmp_path / "config.yaml", outputs[0], capsys)
    assert "input guard (refuse): the model has none; inputs not judged" in text


def test_models_list_and_validate_say_whether_each_model_has_a_guard(
    tmp_path: Path, t1_guard: RoleGuard, capsys: pytest.CaptureFixture[str]
) -> None:
    guarded = _models(tmp_path / "models", t1_guard) / "mr-t1-to-ct.onnx"
    plain = tmp_path / "plain" / "m.onnx"
    plain.parent.mkdir()
    conv1x1_model(plain, linear_card("own-model"), [1.0], 0.0)
    config = tmp_path / "config.yaml"
    config.write_text("inference:\n  providers: [CPUExecutionProvider]\n  models_dir: models\n")
    capsys.readouterr()

    assert cli(["--config", str(config), "models", "validate", str(guarded), str(plain)]) == 0
    lines = capsys.readouterr().out.splitlines()
    expected = (
        f"input guard: T1 ({t1_guard.reference_cases} reference cases, "
        f"threshold {t1_guard.threshold:.2f})"
    )
    assert lines[0].endswith(expected) and lines[1].endswith("; no input guard")

    assert cli(["--config", str(config), "models", "list", "--json"]) == 0
    (row,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert row["guard"] == expected


def _expected_spread(x: np.ndarray, a: float, b: float, offset: float) -> np.ndarray:
    """What the node's two passes of :func:`neighbour_model` disagree by, in HU."""
    right = np.zeros_like(x)
    right[..., :-1] = x[..., 1:]
    left = np.zeros_like(x)
    left[..., 1:] = x[..., :-1]
    passes = np.clip(np.stack([a * x + b * right, a * x + b * left]) + offset, -1024, 3071)
    return np.asarray(passes.std(axis=0))


def test_uncertainty_map_is_a_marked_signed_series_of_its_own_delivered_beside_the_output(
    tmp_path: Path,
    orthanc_factory: Callable[..., Orthanc],
    node_factory: Callable[..., Node],
    heads: dict[str, Volume],
    signing_keys: tuple[Path, Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    models = tmp_path / "models"
    models.mkdir()
    neighbour_model(models / "m.onnx", linear_card(out_offset=-1000.0), a=1.0, b=0.25)
    pacs = orthanc_factory()
    overrides = sends_to(pacs.dicom_port)
    overrides["routes"][0].update(input_guard="off", uncertainty_map=True)
    node = node_factory({"node": {"port": free_port()}, **overrides})
    study = StudySpec()
    t1 = _series(study, heads["T1"], "T1 MPRAGE")
    _send(node, t1, tmp_path / "in")

    def both() -> list[dict[str, Any]] | None:
        series = pacs.series_of_study(study.study_uid)
        full = [s for s in series if len(s["Instances"]) == ACQUISITION.slices]
        return series if len(full) == 2 else None

    series = wait_until(both, 90, what="the synthetic CT and its uncertainty map in the PACS")
    by_kind: dict[str, list[Path]] = {}
    for s in series:
        kind = "map" if "UNCERTAINTY" in s["MainDicomTags"]["SeriesDescription"] else "ct"
        (tmp_path / kind).mkdir()
        by_kind[kind] = [
            pacs.download(i, tmp_path / kind / f"{n}.dcm") for n, i in enumerate(s["Instances"])
        ]

    ct = pydicom.dcmread(by_kind["ct"][0])
    sources = {tuple(round(float(v), 3) for v in ds.ImagePositionPatient): ds for ds in t1}
    assert (
        uncertainty_series_uid(ct.SeriesInstanceUID)
        == pydicom.dcmread(by_kind["map"][0]).SeriesInstanceUID
    )
    for path in by_kind["map"]:
        ds = pydicom.dcmread(path)
        assert ds.Modality == "CT" and ds.StudyInstanceUID == study.study_uid
        assert ds.SyntheticData == "YES"
        assert list(ds.ImageType) == ["DERIVED", "SECONDARY", "AXIAL", "SYNTHETIC", "UNCERTAINTY"]
        assert ds.SeriesDescription.startswith("SYNTHETIC CT UNCERTAINTY from T1 MPRAGE")
        assert ds.SeriesNumber == ct.SeriesNumber + 1
        assert "UNCERTAINTY MAP in HU" in ds.ImageComments
        assert ds.DerivationDescription.startswith("Per-voxel standard deviation, in HU")
        record = _provenance(path)
        assert record.output_series_uid == ds.SeriesInstanceUID
        assert record.uncertainty is not None and record.uncertainty.p95 > 0
        source = sources[tuple(round(float(v), 3) for v in ds.ImagePositionPatient)]
        expected = _expected_spread(source.pixel_array.astype(np.float64), 1.0, 0.25, -1000.0)
        assert np.abs(ds.pixel_array - expected).max() <= 1.5, "rounding + watermark"
    for path in (by_kind["map"][0], by_kind["map"][-1]):
        assert _dcmsign_ok(path, signing_keys[1])
        assert dciodvfy_errors(path) == []
    text = _verify(tmp_path / "config.yaml", by_kind["map"][0], capsys)
    assert "SYNTHETIC" in text and "signature: valid, trusted" in text
    assert "matches the provenance record" in text
    with node.db.session() as session:
        rows = session.scalars(select(OutputSeries)).all()
        delivered = session.scalars(select(Delivery)).all()
    assert {r.series_uid for r in rows} == {
        ct.SeriesInstanceUID,
        uncertainty_series_uid(ct.SeriesInstanceUID),
    }
    assert len(delivered) == 2 and {d.destination for d in delivered} == {"pacs"}
