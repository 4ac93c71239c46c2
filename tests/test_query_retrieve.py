"""Query/Retrieve: workstations find and fetch the node's studies and its synthetic
series with DCMTK's findscu, getscu and movescu."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
from conftest import sends_to
from pydicom.dataset import Dataset
from sqlalchemy import select

from dicom_node.node import Node
from factories import StudySpec, axial_series, ramp_pixels, write_series
from peers import DCMTK_ENV, Orthanc, stored_ok, storescu, wait_until
from storage.models import Job, JobState

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
    """A node holding two studies, the first with its synthetic CT made."""
    pacs = orthanc_factory()
    node = node_factory(sends_to(pacs.dicom_port))
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
            return [j.state for j in session.scalars(select(Job))] == [JobState.DONE]

    wait_until(done, 60, what="the synthetic CT")
    yield Holding(node, pacs, node.address[1], doe, roe)


def _find(port: int, folder: Path, keys: list[str], model: str = "-S") -> list[Dataset]:
    folder.mkdir()
    subprocess.run(
        [
            "findscu",
            model,
            "-X",
            "-od",
            str(folder),
            "-aec",
            "DICOMNODE",
            "127.0.0.1",
            str(port),
            *[a for k in keys for a in ("-k", k)],
        ],
        check=True,
        capture_output=True,
        env=DCMTK_ENV,
        timeout=60,
    )
    return [pydicom.dcmread(p) for p in sorted(folder.glob("rsp*.dcm"))]


def test_find_studies_by_wildcard_name_and_date_range(holding: Holding, tmp_path: Path) -> None:
    (study,) = _find(
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
    dated = _find(
        holding.port,
        tmp_path / "b",
        ["QueryRetrieveLevel=STUDY", "StudyDate=20250101-20251231", "StudyInstanceUID"],
    )
    assert [d.StudyInstanceUID for d in dated] == [holding.roe.study_uid]
    patients = _find(
        holding.port,
        tmp_path / "c",
        ["QueryRetrieveLevel=PATIENT", "PatientID", "PatientName"],
        model="-P",
    )
    assert sorted(str(p.PatientName) for p in patients) == ["Doe^Jane", "Roe^Rick"]


def test_find_series_shows_the_synthetic_series(holding: Holding, tmp_path: Path) -> None:
    series = _find(
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
    (ct,) = _find(
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


def test_get_retrieves_the_synthetic_series_as_stored(holding: Holding, tmp_path: Path) -> None:
    series_uid = _synthetic_series_uid(holding, tmp_path)
    out = tmp_path / "got"
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
            str(holding.port),
            "-k",
            "QueryRetrieveLevel=SERIES",
            "-k",
            f"StudyInstanceUID={holding.doe.study_uid}",
            "-k",
            f"SeriesInstanceUID={series_uid}",
        ],
        check=True,
        capture_output=True,
        env=DCMTK_ENV,
        timeout=120,
    )
    files = [pydicom.dcmread(p) for p in out.iterdir()]
    assert len(files) == 4
    assert {f.SeriesInstanceUID for f in files} == {series_uid}
    assert all(f.SyntheticData == "YES" for f in files)


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
