"""The whole path against a real Orthanc: PACS auto-routes a study to the node, the node
synthesizes the missing CT and sends it back into the same study."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from conftest import sends_to
from sqlalchemy import func, select

from dicom_node.evidence.provenance import read_private_block
from dicom_node.evidence.verify import verify_file
from dicom_node.evidence.watermark import detect
from dicom_node.runtime.node import Node
from factories import StudySpec, axial_series, enhanced_mr, ramp_pixels, valid_ds, write_series
from inference.training.simulate import Acquisition, simulate_subject
from peers import (
    Orthanc,
    dciodvfy_errors,
    findscu,
    free_port,
    stored_ok,
    storescu,
    wait_until,
)
from storage.models import AuditEvent, Instance, Job, Series

pytestmark = pytest.mark.integration


def _pacs_and_node(
    orthanc_factory: Callable[..., Orthanc],
    node_factory: Callable[..., Node],
    auto_route: bool = True,
    overrides: dict[str, Any] | None = None,
) -> tuple[Orthanc, Node]:
    node_port = free_port()
    pacs = orthanc_factory(
        modalities={"node": ("DICOMNODE", "127.0.0.1", node_port)}, auto_route=auto_route
    )
    node = node_factory(
        {
            "node": {"port": node_port},
            **sends_to(pacs.dicom_port),
            **(overrides or {}),
        }
    )
    return pacs, node


def _send_to_pacs(pacs: Orthanc, paths: list[Path]) -> None:
    result = storescu("127.0.0.1", pacs.dicom_port, "ORTHANC", paths)
    assert stored_ok(result) == len(paths), result.stdout + result.stderr


def _synthetic_series(pacs: Orthanc, study_uid: str) -> list[dict[str, Any]]:
    return [
        s for s in pacs.series_of_study(study_uid) if s["MainDicomTags"].get("Modality") == "CT"
    ]


def _wait_for_ct(
    pacs: Orthanc, study_uid: str, instances: int, timeout: float = 90
) -> dict[str, Any]:
    def ready() -> dict[str, Any] | None:
        series = _synthetic_series(pacs, study_uid)
        if len(series) == 1 and len(series[0]["Instances"]) == instances:
            return series[0]
        return None

    return wait_until(ready, timeout, what=f"a {instances}-instance synthetic CT in the PACS")


@pytest.mark.parametrize("watermark", [False, True], ids=["exact", "watermarked"])
def test_pacs_gets_marked_synthetic_ct_in_same_study(
    tmp_path: Path,
    orthanc_factory: Callable[..., Orthanc],
    node_factory: Callable[..., Node],
    models_dir: Path,
    signing_keys: tuple[Path, Path],
    watermark: bool,
) -> None:
    """Without the invisible watermark the numbers are exactly the model's (HU = 2·T1 −
    1000); with it, no value moves by more than 1 and the mark names the provenance."""
    pacs, _node = _pacs_and_node(
        orthanc_factory, node_factory, overrides={"synthetic": {"invisible_watermark": watermark}}
    )
    study = StudySpec()
    pixels = ramp_pixels(slices=8, rows=64, cols=72)
    source = axial_series(study, pixels, description="T1 MPRAGE", spacing=(2.5, 0.9, 0.8))
    _send_to_pacs(pacs, write_series(source, tmp_path / "t1"))

    ct = _wait_for_ct(pacs, study.study_uid, instances=8)

    by_position = {tuple(round(float(v), 3) for v in ds.ImagePositionPatient): ds for ds in source}
    for i, instance_id in enumerate(ct["Instances"]):
        path = pacs.download(instance_id, tmp_path / f"ct{i}.dcm")
        out = pydicom.dcmread(path)
        src = by_position[tuple(round(float(v), 3) for v in out.ImagePositionPatient)]
        assert out.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2"
        assert out.Modality == "CT"
        assert out.StudyInstanceUID == study.study_uid
        assert out.FrameOfReferenceUID == study.frame_of_reference_uid
        assert out.SeriesInstanceUID != src.SeriesInstanceUID
        assert list(out.ImageOrientationPatient) == list(src.ImageOrientationPatient)
        assert [float(v) for v in out.PixelSpacing] == [0.9, 0.8]
        assert float(out.SliceThickness) == 2.5
        expected = 2 * src.pixel_array.astype(np.int32) - 1000
        change = np.abs(out.pixel_array.astype(np.int32) - expected)
        if watermark:
            assert change.max() <= 1 and change.mean() <= 0.5
            record = read_private_block(out)
            assert record is not None
            assert detect(out.pixel_array).identifier == record.identifier
            assert _dcmsign_ok(path, signing_keys[1])
        else:
            assert change.max() == 0
        assert out.BurnedInAnnotation == "NO" and out[0x60003000].value, "overlay, pixels kept"
        assert out.SyntheticData == "YES"
        assert list(out.ImageType)[:2] == ["DERIVED", "SECONDARY"]
        assert out.SeriesDescription.startswith("SYNTHETIC ")
        assert "mr-t1-to-ct" in out.DerivationDescription
        assert out.SourceImageSequence[0].ReferencedSOPInstanceUID == src.SOPInstanceUID
        code = out.ContributingEquipmentSequence[0].PurposeOfReferenceCodeSequence[0]
        assert (code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning) == (
            "109100",
            "DCM",
            "Synthesizing Equipment",
        )
        assert out.PatientID == study.patient_id
        assert dciodvfy_errors(path) == []


def _dcmsign_ok(path: Path, certificate: Path) -> bool:
    result = subprocess.run(
        ["dcmsign", "--verify", "+cf", str(certificate), str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return result.returncode == 0 and "Signature Verification : OK" in result.stdout + result.stderr


def test_resent_study_and_routed_back_output_leave_exactly_one_synthetic_series(
    tmp_path: Path,
    orthanc_factory: Callable[..., Orthanc],
    node_factory: Callable[..., Node],
    models_dir: Path,
) -> None:
    """The PACS routes every stable study to the node, the node's own output included."""
    pacs, node = _pacs_and_node(orthanc_factory, node_factory)
    study = StudySpec()
    paths = write_series(axial_series(study, ramp_pixels(slices=6)), tmp_path / "t1")
    _send_to_pacs(pacs, paths)
    ct = _wait_for_ct(pacs, study.study_uid, instances=6)

    _send_to_pacs(pacs, paths)
    # The PACS re-routes the study (T1 + synthetic CT) to the node at least once more.
    wait_until(lambda: _node_received_synthetic(node), 60, what="the node to get its output back")
    wait_until(lambda: not _pacs_jobs_running(pacs), 60, what="the PACS's jobs to finish")
    node_jobs = _jobs(node)
    assert [j["state"] for j in node_jobs] == ["done"]
    series = _synthetic_series(pacs, study.study_uid)
    assert len(series) == 1
    assert series[0]["ID"] == ct["ID"]
    assert len(series[0]["Instances"]) == 6


def _jobs(node: Node) -> list[dict[str, Any]]:
    with node.db.session() as session:
        return [{"state": j.state.value, "error": j.error} for j in session.scalars(select(Job))]


def _node_received_synthetic(node: Node) -> bool:
    with node.db.session() as session:
        return "CT" in set(session.scalars(select(Series.modality)))


def _pacs_jobs_running(pacs: Orthanc) -> bool:
    return any(pacs.get(f"/jobs/{j}")["State"] in ("Pending", "Running") for j in pacs.get("/jobs"))


def _audit(node: Node, study_uid: str) -> list[tuple[str, dict[str, Any]]]:
    with node.db.session() as session:
        events = session.scalars(
            select(AuditEvent).where(AuditEvent.study_uid == study_uid).order_by(AuditEvent.id)
        )
        return [(e.kind, e.detail) for e in events]


def test_study_with_a_real_ct_gets_no_synthetic_ct_and_unknown_series_are_stored_and_ignored(
    tmp_path: Path, node_factory: Callable[..., Node], models_dir: Path
) -> None:
    node = node_factory({"routes": [{"model": "mr-t1-to-ct", "send_to": ["sender"]}]})
    assert node.address is not None
    with_ct, unknown_only = StudySpec(), StudySpec()
    t1 = axial_series(with_ct, ramp_pixels(slices=3))
    ct = axial_series(
        with_ct, ramp_pixels(slices=3).astype(np.int16), modality="CT", description="Head CT"
    )
    localizer = axial_series(unknown_only, ramp_pixels(slices=2), description="LOCALIZER")
    paths = write_series([*t1, *ct, *localizer], tmp_path / "in")
    assert stored_ok(storescu("127.0.0.1", node.address[1], "DICOMNODE", paths)) == 8

    def routed() -> bool:
        kinds = [
            k for k, _ in _audit(node, with_ct.study_uid) + _audit(node, unknown_only.study_uid)
        ]
        return len(kinds) == 2

    wait_until(routed, 30, what="both studies to be routed")
    assert _audit(node, with_ct.study_uid) == [
        ("route.skip", {"model": "mr-t1-to-ct", "reason": "CT already present"})
    ]
    assert _audit(node, unknown_only.study_uid) == [
        ("route.skip", {"model": "mr-t1-to-ct", "reason": "missing input roles ['T1']"})
    ]
    assert _jobs(node) == []
    with node.db.session() as session:
        assert session.scalar(select(func.count(Instance.id))) == 8


def test_node_without_models_starts_warns_and_stores(
    tmp_path: Path, node_factory: Callable[..., Node], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("WARNING", logger="dicom_node"):
        node = node_factory({"routes": [{"model": "mr-t1-to-ct", "send_to": ["sender"]}]})
    events = {r.getMessage() for r in caplog.records}
    assert {"model.none", "route.inactive"} <= events
    assert node.address is not None
    paths = write_series(axial_series(StudySpec(), ramp_pixels(slices=2)), tmp_path / "in")
    assert stored_ok(storescu("127.0.0.1", node.address[1], "DICOMNODE", paths)) == 2


def test_enhanced_mr_t1_gets_a_classic_synthetic_ct_back_on_its_frames(
    tmp_path: Path,
    orthanc_factory: Callable[..., Orthanc],
    node_factory: Callable[..., Node],
    models_dir: Path,
) -> None:
    """A simulated head's T1 as one Enhanced MR object (what Siemens XA and newer Philips
    scanners send) goes through the PACS; a classic single-frame CT comes back, one
    instance per frame, on that frame's position, with exactly the model's values."""
    pacs, _node = _pacs_and_node(
        orthanc_factory, node_factory, overrides={"synthetic": {"invisible_watermark": False}}
    )
    acquisition = Acquisition(pixel_spacing_mm=3.0, slice_thickness_mm=6.0, rows=88, columns=80)
    t1 = simulate_subject(1000, acquisition).images["T1"]
    geometry = t1.geometry
    stored = np.clip(np.rint(t1.array), 0, 65535).astype(np.uint16)
    study = StudySpec()
    classic = valid_ds(
        axial_series(
            study, stored, description="T1 MPRAGE", spacing=geometry.spacing, origin=geometry.origin
        )
    )
    enhanced = enhanced_mr(classic)
    path = tmp_path / "t1.dcm"
    enhanced.save_as(path, enforce_file_format=True)
    _send_to_pacs(pacs, [path])

    frames = geometry.shape[0]
    ct = _wait_for_ct(pacs, study.study_uid, instances=frames)
    by_position = {
        tuple(round(float(v), 3) for v in item.PlanePositionSequence[0].ImagePositionPatient): k
        for k, item in enumerate(enhanced.PerFrameFunctionalGroupsSequence)
    }
    seen = set()
    for i, instance_id in enumerate(ct["Instances"]):
        out = pydicom.dcmread(pacs.download(instance_id, tmp_path / f"ct{i}.dcm"))
        assert out.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2"
        assert "NumberOfFrames" not in out
        k = by_position[tuple(round(float(v), 3) for v in out.ImagePositionPatient)]
        seen.add(k)
        assert out.SourceImageSequence[0].ReferencedFrameNumber == k + 1
        assert out.FrameOfReferenceUID == study.frame_of_reference_uid
        expected = 2 * stored[k].astype(np.int32) - 1000
        assert np.array_equal(out.pixel_array.astype(np.int32), np.clip(expected, -1024, 3071))
        if i == 0:
            assert dciodvfy_errors(tmp_path / "ct0.dcm") == []
    assert seen == set(range(frames))


def test_enhanced_route_gets_one_multi_frame_synthetic_ct_back_on_the_source_grid(
    tmp_path: Path,
    orthanc_factory: Callable[..., Orthanc],
    node_factory: Callable[..., Node],
    models_dir: Path,
    signing_keys: tuple[Path, Path],
) -> None:
    """`output_format: enhanced`: the PACS takes one Legacy Converted Enhanced CT whose
    frames lie on the source slices, hold the model's values (within the watermark's ±1),
    and whose signature DCMTK and `verify` both accept."""
    pacs, _node = _pacs_and_node(
        orthanc_factory,
        node_factory,
        overrides={
            "routes": [{"model": "mr-t1-to-ct", "send_to": ["pacs"], "output_format": "enhanced"}]
        },
    )
    study = StudySpec()
    source = axial_series(study, ramp_pixels(slices=8, rows=64, cols=72), spacing=(2.5, 0.9, 0.8))
    _send_to_pacs(pacs, write_series(source, tmp_path / "t1"))

    (instance_id,) = _wait_for_ct(pacs, study.study_uid, instances=1)["Instances"]
    path = pacs.download(instance_id, tmp_path / "ct.dcm")
    out = pydicom.dcmread(path)
    assert out.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2.2"
    assert out.SyntheticData == "YES" and out.SeriesDescription.startswith("SYNTHETIC ")
    assert out.StudyInstanceUID == study.study_uid
    assert out.FrameOfReferenceUID == study.frame_of_reference_uid
    assert int(out.NumberOfFrames) == len(source)
    by_position = {tuple(round(float(v), 3) for v in ds.ImagePositionPatient): ds for ds in source}
    frames = out.pixel_array
    seen = set()
    for k, item in enumerate(out.PerFrameFunctionalGroupsSequence):
        position = item.PlanePositionSequence[0].ImagePositionPatient
        src = by_position[tuple(round(float(v), 3) for v in position)]
        seen.add(src.SOPInstanceUID)
        source_image = item.DerivationImageSequence[0].SourceImageSequence[0]
        assert source_image.ReferencedSOPInstanceUID == src.SOPInstanceUID
        change = np.abs(frames[k].astype(np.int32) - (2 * src.pixel_array.astype(np.int32) - 1000))
        assert change.max() <= 1
    assert seen == {ds.SOPInstanceUID for ds in source}
    shared = out.SharedFunctionalGroupsSequence[0]
    assert list(shared.PlaneOrientationSequence[0].ImageOrientationPatient) == [1, 0, 0, 0, 1, 0]
    assert [float(v) for v in shared.PixelMeasuresSequence[0].PixelSpacing] == [0.9, 0.8]
    record = read_private_block(out)
    assert record is not None and detect(frames[0]).identifier == record.identifier
    assert verify_file(path).signature == "valid"
    assert _dcmsign_ok(path, signing_keys[1])
    assert dciodvfy_errors(path) == []


def _review_cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The real `dicom-node review …` command, in its own process."""
    return subprocess.run(
        [sys.executable, "-m", "dicom_node", "--config", str(config), "review", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def _review_queue(config: Path) -> dict[str, dict[str, Any]]:
    """`review list --json`, by study."""
    result = _review_cli(config, "list", "--json")
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    return {row["study_uid"]: row for row in rows}


def _absent_for(pacs: Orthanc, study_uids: list[str], seconds: float) -> None:
    """No synthetic series of any of ``study_uids`` reaches the PACS for ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for uid in study_uids:
            assert _synthetic_series(pacs, uid) == [], f"a held output of {uid} reached the PACS"
        time.sleep(0.5)


def test_reviewed_route_holds_the_ct_until_approved_and_never_sends_a_rejected_one(
    tmp_path: Path,
    orthanc_factory: Callable[..., Orthanc],
    node_factory: Callable[..., Node],
    models_dir: Path,
) -> None:
    """The same study through a node without review gives the time its CT takes to reach
    the PACS (t); with `review: true` on the route, the CT is listed by `review list` and
    stays out of the PACS for 2·t after that; `review approve` (the CLI) delivers exactly
    one complete series; a second study's CT rejected with `review reject` never arrives
    within 2·t either, and the node's Q/R does not answer with it."""
    study, other = StudySpec(), StudySpec()
    paths = write_series(axial_series(study, ramp_pixels(slices=8)), tmp_path / "t1")
    other_paths = write_series(axial_series(other, ramp_pixels(slices=8)), tmp_path / "t1b")
    models = {"inference": {"models_dir": str(models_dir)}}

    plain_pacs = orthanc_factory("plain-pacs")
    plain = node_factory({**sends_to(plain_pacs.dicom_port), **models}, tmp_path / "plain")
    assert plain.address is not None
    start = time.monotonic()
    assert stored_ok(storescu("127.0.0.1", plain.address[1], "DICOMNODE", paths)) == 8
    _wait_for_ct(plain_pacs, study.study_uid, instances=8)
    unreviewed_s = time.monotonic() - start
    plain.stop(drain_s=5)

    pacs = orthanc_factory("pacs")
    routes = sends_to(pacs.dicom_port)
    routes["routes"][0]["review"] = True
    reviewed = node_factory(
        {**routes, **models, "query_retrieve": {"allowed_calling_aets": ["FINDSCU"]}},
        tmp_path / "reviewed",
    )
    config = tmp_path / "reviewed" / "config.yaml"
    assert reviewed.address is not None
    port = reviewed.address[1]
    assert stored_ok(storescu("127.0.0.1", port, "DICOMNODE", [*paths, *other_paths])) == 16

    def both_held() -> dict[str, dict[str, Any]] | None:
        queue = _review_queue(config)
        return queue if len(queue) == 2 else None

    queue = wait_until(both_held, 120, interval=0.5, what="both outputs awaiting review")
    held, refused = queue[study.study_uid], queue[other.study_uid]
    assert held["model"].startswith("mr-t1-to-ct@") and held["instances"] == 8
    assert held["send_to"] == ["pacs"] and isinstance(held["waited_s"], int)
    _absent_for(pacs, [study.study_uid, other.study_uid], 2 * unreviewed_s)

    approved = _review_cli(config, "approve", held["series_uid"], "--reviewer", "dr. who")
    assert approved.returncode == 0, approved.stderr
    assert "approved by dr. who, queued for pacs" in approved.stdout
    rejected = _review_cli(
        config, "reject", refused["series_uid"], "--reviewer", "dr. who", "--reason", "artefact"
    )
    assert rejected.returncode == 0, rejected.stderr
    assert "rejected by dr. who: never sent" in rejected.stdout
    assert _review_queue(config) == {}

    ct = _wait_for_ct(pacs, study.study_uid, instances=8)
    assert ct["MainDicomTags"]["SeriesInstanceUID"] == held["series_uid"]
    _absent_for(pacs, [other.study_uid], 2 * unreviewed_s)
    (only,) = _synthetic_series(pacs, study.study_uid)
    assert only["ID"] == ct["ID"] and len(only["Instances"]) == 8

    def found(study_uid: str, name: str) -> list[str]:
        keys = ["QueryRetrieveLevel=SERIES", f"StudyInstanceUID={study_uid}", "Modality"]
        responses = findscu(port, tmp_path / name, [*keys, "SeriesInstanceUID"])
        return [ds.SeriesInstanceUID for ds in responses if ds.Modality == "CT"]

    assert found(study.study_uid, "find-approved") == [held["series_uid"]]
    assert found(other.study_uid, "find-rejected") == []
