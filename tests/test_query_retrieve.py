"""Query/Retrieve: workstations find and fetch the node's studies and its synthetic
series with DCMTK's findscu, getscu and movescu."""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
import pytest
from conftest import sends_to
from pydicom.dataset import Dataset
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    MRImageStorage,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
)
from sqlalchemy import select

from dicom_node.dicom.status import QueryRetrieveStatus
from dicom_node.runtime.node import Node
from factories import StudySpec, axial_series, ramp_pixels, write_series
from peers import DCMTK_ENV, Orthanc, findscu, stored_ok, storescu, wait_until
from storage.models import Instance, Job, JobState, OutputSeries, OutputState, Series

pytestmark = pytest.mark.integration


@dataclass
class Holding:
    node: Node
    pacs: Orthanc
    port: int
    doe: StudySpec
    roe: StudySpec


@pytest.fixture
def holding(
    tmp_path: Path,
    orthanc_factory: Callable[..., Orthanc],
    node_factory: Callable[..., Node],
    models_dir: Path,
) -> Iterator[Holding]:
    """A node holding two studies, the first with its synthetic CT made and released
    (Q/R shows an output only once the outbox has released it)."""
    pacs = orthanc_factory()
    node = node_factory(
        {
            **sends_to(pacs.dicom_port),
            "query_retrieve": {"allowed_calling_aets": ["FINDSCU", "GETSCU", "MOVESCU"]},
        }
    )
    assert node.address is not None
    doe = StudySpec(patient_name="Doe^Jane", patient_id="QR-1")
    roe = StudySpec(patient_name="Roe^Rick", patient_id="QR-2")
    first = axial_series(doe, ramp_pixels(slices=4), description="T1 MPRAGE")
    for ds in first:
        ds.StudyDate = "20260102"
    second = axial_series(roe, ramp_pixels(slices=2), description="LOCALIZER")
    for ds in second:
        ds.StudyDate = "20250101"
    paths = write_series([*first, *second], tmp_path / "in")
    assert stored_ok(storescu("127.0.0.1", node.address[1], "DICOMNODE", paths)) == 6

    def done() -> bool:
        with node.db.session() as session:
            jobs = [j.state for j in session.scalars(select(Job))]
            outputs = list(session.scalars(select(OutputSeries.state)))
            return jobs == [JobState.DONE] and outputs in (
                [OutputState.RELEASED],
                [OutputState.DELIVERED],
            )

    wait_until(done, 60, what="the synthetic CT, released")
    yield Holding(node, pacs, node.address[1], doe, roe)


def test_find_studies_by_wildcard_name_and_date_range(holding: Holding, tmp_path: Path) -> None:
    (study,) = findscu(
        holding.port,
        tmp_path / "a",
        [
            "QueryRetrieveLevel=STUDY",
            "PatientName=doe*",
            "StudyInstanceUID",
            "ModalitiesInStudy",
            "NumberOfStudyRelatedInstances",
            "PatientID",
        ],
    )
    assert study.StudyInstanceUID == holding.doe.study_uid
    assert study.PatientID == "QR-1"
    assert sorted(study.ModalitiesInStudy) == ["CT", "MR"]
    assert int(study.NumberOfStudyRelatedInstances) == 8
    dated = findscu(
        holding.port,
        tmp_path / "b",
        ["QueryRetrieveLevel=STUDY", "StudyDate=20250101-20251231", "StudyInstanceUID"],
    )
    assert [d.StudyInstanceUID for d in dated] == [holding.roe.study_uid]
    patients = findscu(
        holding.port,
        tmp_path / "c",
        ["QueryRetrieveLevel=PATIENT", "PatientID", "PatientName"],
        model="-P",
    )
    assert sorted(str(p.PatientName) for p in patients) == ["Doe^Jane", "Roe^Rick"]


def test_find_series_shows_the_synthetic_series(holding: Holding, tmp_path: Path) -> None:
    series = findscu(
        holding.port,
        tmp_path / "s",
        [
            "QueryRetrieveLevel=SERIES",
            f"StudyInstanceUID={holding.doe.study_uid}",
            "SeriesInstanceUID",
            "Modality",
            "SeriesDescription",
            "NumberOfSeriesRelatedInstances",
        ],
    )
    by_modality = {s.Modality: s for s in series}
    assert set(by_modality) == {"MR", "CT"}
    assert by_modality["CT"].SeriesDescription.startswith("SYNTHETIC CT")
    assert int(by_modality["CT"].NumberOfSeriesRelatedInstances) == 4


def _synthetic_series_uid(holding: Holding, tmp_path: Path) -> str:
    (ct,) = findscu(
        holding.port,
        tmp_path / "ct",
        [
            "QueryRetrieveLevel=SERIES",
            f"StudyInstanceUID={holding.doe.study_uid}",
            "Modality=CT",
            "SeriesInstanceUID",
        ],
    )
    return str(ct.SeriesInstanceUID)


def _get_series(port: int, out: Path, study_uid: str, series_uid: str) -> list[Dataset]:
    """C-GET of one series with DCMTK's getscu; the data sets it received."""
    out.mkdir()
    subprocess.run(
        [
            "getscu",
            "-S",
            "-od",
            str(out),
            "-aec",
            "DICOMNODE",
            "127.0.0.1",
            str(port),
            "-k",
            "QueryRetrieveLevel=SERIES",
            "-k",
            f"StudyInstanceUID={study_uid}",
            "-k",
            f"SeriesInstanceUID={series_uid}",
        ],
        check=True,
        capture_output=True,
        env=DCMTK_ENV,
        timeout=120,
    )
    return [pydicom.dcmread(p) for p in out.iterdir()]


def test_get_retrieves_the_synthetic_series_as_stored(holding: Holding, tmp_path: Path) -> None:
    series_uid = _synthetic_series_uid(holding, tmp_path)
    files = _get_series(holding.port, tmp_path / "got", holding.doe.study_uid, series_uid)
    assert len(files) == 4
    assert {f.SeriesInstanceUID for f in files} == {series_uid}
    assert all(f.SyntheticData == "YES" for f in files)


def test_a_rerun_with_fewer_slices_leaves_no_stale_instance_to_find_or_retrieve(
    holding: Holding, tmp_path: Path
) -> None:
    """The study changed (two of its four T1 slices gone) and the job runs again: the
    new version of the synthetic series has two instances, and only those two are found,
    retrieved and kept in the spool; the old ones' rows pointed at reused spool files."""
    node = holding.node
    series_uid = _synthetic_series_uid(holding, tmp_path)
    with node.db.session() as session:
        job = session.scalars(select(Job)).one()
        slices = session.scalars(
            select(Instance)
            .join(Series)
            .where(Series.series_uid == job.input_series[0])
            .order_by(Instance.instance_number)
        ).all()
        for gone in (slices[0], slices[2]):
            session.delete(gone)
        session.add(
            Job(
                study_id=job.study_id,
                model_id=job.model_id,
                model_version=job.model_version,
                input_series=job.input_series,
                fingerprint="the study changed",
                send_to=job.send_to,
                created_at=job.created_at,
                updated_at=job.updated_at,
            )
        )

    def both_done() -> bool:
        with node.db.session() as session:
            return [j.state for j in session.scalars(select(Job))] == [JobState.DONE] * 2

    wait_until(both_done, 60, what="the re-run")
    found = findscu(
        holding.port,
        tmp_path / "images",
        [
            "QueryRetrieveLevel=IMAGE",
            f"StudyInstanceUID={holding.doe.study_uid}",
            f"SeriesInstanceUID={series_uid}",
            "SOPInstanceUID",
        ],
    )
    assert len(found) == 2
    got = _get_series(holding.port, tmp_path / "got", holding.doe.study_uid, series_uid)
    assert sorted(str(ds.SOPInstanceUID) for ds in got) == sorted(
        str(ds.SOPInstanceUID) for ds in found
    )
    with node.db.session() as session:
        out = session.scalars(select(OutputSeries)).one()
    assert len(list(node.spool.path(out.spool_key).iterdir())) == 2


def test_move_sends_to_a_configured_destination_and_refuses_others(
    holding: Holding, tmp_path: Path
) -> None:
    wait_until(
        lambda: holding.pacs.series_of_study(holding.doe.study_uid),
        60,
        what="the routed output in the PACS",
    )
    move = [
        "movescu",
        "-S",
        "-aec",
        "DICOMNODE",
        "127.0.0.1",
        str(holding.port),
        "-k",
        "QueryRetrieveLevel=STUDY",
        "-k",
        f"StudyInstanceUID={holding.roe.study_uid}",
    ]
    result = subprocess.run(
        [*move, "-aem", "ORTHANC"], capture_output=True, text=True, env=DCMTK_ENV, timeout=120
    )
    assert result.returncode == 0, result.stderr
    moved = holding.pacs.series_of_study(holding.roe.study_uid)
    assert [len(s["Instances"]) for s in moved] == [2]
    refused = subprocess.run(
        [*move, "-aem", "STRANGER", "-v"],
        capture_output=True,
        text=True,
        env=DCMTK_ENV,
        timeout=120,
    )
    assert "Refused: MoveDestinationUnknown" in refused.stdout + refused.stderr


def _find_status(port: int, calling_ae: str) -> tuple[int, int]:
    """(final status, matches) of a STUDY-level C-FIND for every study, from ``calling_ae``."""
    ae = AE(ae_title=calling_ae)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = ae.associate("127.0.0.1", port, ae_title="DICOMNODE")
    assert assoc.is_established
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = ""
    query.PatientName = ""
    responses = list(assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind))
    assoc.release()
    matches = sum(1 for status, _ in responses if status and status.Status == 0xFF00)
    return int(responses[-1][0].Status), matches


def _get_status(port: int, calling_ae: str, study_uid: str) -> tuple[int, int]:
    """(final status, instances received) of a STUDY-level C-GET from ``calling_ae``."""
    received: list[str] = []

    def on_store(event: Any) -> int:
        received.append(str(event.request.AffectedSOPInstanceUID))
        return 0x0000

    ae = AE(ae_title=calling_ae)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    ae.add_requested_context(MRImageStorage)
    role = build_role(MRImageStorage, scp_role=True)
    assoc = ae.associate(
        "127.0.0.1",
        port,
        ae_title="DICOMNODE",
        ext_neg=[role],
        evt_handlers=[(evt.EVT_C_STORE, on_store)],
    )
    assert assoc.is_established
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = study_uid
    responses = list(assoc.send_c_get(query, StudyRootQueryRetrieveInformationModelGet))
    assoc.release()
    return int(responses[-1][0].Status), len(received)


def test_query_retrieve_is_closed_unless_the_calling_ae_is_listed(
    tmp_path: Path, node_factory: Callable[..., Node], caplog: pytest.LogCaptureFixture
) -> None:
    """The defaults answer any caller's C-STORE but nobody's C-FIND/C-GET/C-MOVE: the
    answers carry patient names and whole studies."""
    study = StudySpec(patient_name="Doe^Jane", patient_id="QR-9")
    paths = write_series(axial_series(study, ramp_pixels(slices=2)), tmp_path / "in")
    with caplog.at_level(logging.WARNING):
        closed = node_factory({"node": {"host": "0.0.0.0"}}, folder=tmp_path / "closed")
    assert any(r.getMessage() == "access.open" for r in caplog.records)
    assert closed.address is not None
    port = closed.address[1]
    assert stored_ok(storescu("127.0.0.1", port, "DICOMNODE", paths)) == 2
    assert _find_status(port, "FINDSCU") == (QueryRetrieveStatus.NOT_AUTHORIZED, 0)
    status, received = _get_status(port, "GETSCU", study.study_uid)
    assert (status, received) == (QueryRetrieveStatus.NOT_AUTHORIZED, 0)

    listed = node_factory(
        {
            "query_retrieve": {
                "allowed_calling_aets": ["VIEWER", "ELSEWHERE"],
                "calling_ae_hosts": {"ELSEWHERE": ["10.99.0.0/16"]},
            }
        },
        folder=tmp_path / "listed",
    )
    assert listed.address is not None
    port = listed.address[1]
    assert stored_ok(storescu("127.0.0.1", port, "DICOMNODE", paths)) == 2
    assert _find_status(port, "VIEWER") == (QueryRetrieveStatus.SUCCESS, 1)
    assert _get_status(port, "VIEWER", study.study_uid) == (QueryRetrieveStatus.SUCCESS, 2)
    assert _find_status(port, "ELSEWHERE") == (QueryRetrieveStatus.NOT_AUTHORIZED, 0)
    assert _find_status(port, "STRANGER") == (QueryRetrieveStatus.NOT_AUTHORIZED, 0)
    move = subprocess.run(
        [
            "movescu", "-v", "-S", "-aet", "STRANGER", "-aec", "DICOMNODE", "-aem", "VIEWER",
            "127.0.0.1", str(port), "-k", "QueryRetrieveLevel=STUDY",
            "-k", f"StudyInstanceUID={study.study_uid}",
        ],
        capture_output=True, text=True, env=DCMTK_ENV, timeout=120,
    )  # fmt: skip
    assert "Refused: MoveDestinationUnknown" in move.stdout + move.stderr


def test_an_unreadable_spool_file_fails_one_sub_operation_not_the_retrieve(
    tmp_path: Path, node_factory: Callable[..., Node]
) -> None:
    """A spool file gone (a disk fault, an operator's mistake) costs its own instance:
    the rest are sent, and the final Warning names it (PS3.4 C.4.3.1.3.2)."""
    node = node_factory({"query_retrieve": {"allowed_calling_aets": ["VIEWER"]}})
    assert node.address is not None
    port = node.address[1]
    study = StudySpec()
    series = axial_series(study, ramp_pixels(slices=3))
    paths = write_series(series, tmp_path / "in")
    assert stored_ok(storescu("127.0.0.1", port, "DICOMNODE", paths)) == 3
    broken = str(series[1].SOPInstanceUID)
    with node.db.session() as session:
        key = session.scalar(select(Instance.spool_key).where(Instance.sop_instance_uid == broken))
    assert key is not None
    node.spool.path(key).unlink()

    received: list[str] = []

    def on_store(event: Any) -> int:
        received.append(str(event.request.AffectedSOPInstanceUID))
        return 0x0000

    ae = AE(ae_title="VIEWER")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    ae.add_requested_context(MRImageStorage)
    assoc = ae.associate(
        "127.0.0.1",
        port,
        ae_title="DICOMNODE",
        ext_neg=[build_role(MRImageStorage, scp_role=True)],
        evt_handlers=[(evt.EVT_C_STORE, on_store)],
    )
    assert assoc.is_established
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = study.study_uid
    *_, (final, identifier) = assoc.send_c_get(query, StudyRootQueryRetrieveInformationModelGet)
    assoc.release()

    assert sorted(received) == sorted(
        str(ds.SOPInstanceUID) for ds in series if ds.SOPInstanceUID != broken
    )
    assert final.Status == QueryRetrieveStatus.SUB_OPERATIONS_COMPLETE_WITH_FAILURES
    assert (final.NumberOfCompletedSuboperations, final.NumberOfFailedSuboperations) == (2, 1)
    assert identifier is not None
    assert identifier.FailedSOPInstanceUIDList == broken
