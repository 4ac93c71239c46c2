"""C-FIND matching over the index on its own (PS3.4 C.2.2.2), on a real SQLite database:
what a query service gets from :mod:`dicom_node.query.matching`, whatever protocol asked."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from sqlalchemy.orm import Session

from dicom_node.query.matching import QueryError, find, retrieve_keys
from storage.database import Database
from storage.models import Instance, Series, Study

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def _study(uid: str, patient_id: str, name: str, date: str, time: str = "") -> Study:
    return Study(
        study_uid=uid,
        patient_id=patient_id,
        patient_name=name,
        study_date=date,
        study_time=time,
        first_received_at=NOW,
        last_received_at=NOW,
    )


def _series(study: Study, uid: str, modality: str, number: int, instances: int) -> Series:
    series = Series(study=study, series_uid=uid, modality=modality, series_number=number)
    for i in range(instances):
        series.instances.append(
            Instance(
                sop_instance_uid=f"{uid}.{i + 1}",
                sop_class_uid="1.2.840.10008.5.1.4.1.1.4",
                transfer_syntax_uid="1.2.840.10008.1.2.1",
                spool_key=f"instances/{uid}/{i + 1}.dcm",
                size_bytes=1000,
                received_at=NOW,
                instance_number=i + 1,
            )
        )
    return series


@pytest.fixture
def session(tmp_path: Path) -> Iterator[Session]:
    """An index of three studies of two patients: MR with a synthetic CT, MR alone, CT."""
    db = Database(f"sqlite:///{tmp_path / 'node.db'}")
    with db.session() as s:
        mr_ct = _study("1.2.1", "P1", "Doe^Jane", "20250310", "101500")
        _series(mr_ct, "1.2.1.1", "MR", 3, 4)
        _series(mr_ct, "1.2.1.2", "CT", 9003, 4)
        mr = _study("1.2.2", "P1", "Doe^Jane", "20250402", "083000")
        _series(mr, "1.2.2.1", "MR", 1, 2)
        ct = _study("1.2.3", "P2", "Rossi^Mario_X", "20241231", "235959")
        _series(ct, "1.2.3.1", "CT", 2, 1)
        s.add_all([mr_ct, mr, ct])
    with db.session() as s:
        yield s
    db.dispose()


def _identifier(level: str, **keys: str) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


def _uids(session: Session, identifier: Dataset, keyword: str) -> list[str]:
    return [str(answer.get(keyword)) for answer in find(session, identifier)]


def test_universal_single_value_and_uid_list_matching(session: Session) -> None:
    assert _uids(session, _identifier("STUDY", StudyInstanceUID=""), "StudyInstanceUID") == [
        "1.2.3",
        "1.2.1",
        "1.2.2",
    ]
    by_patient = _identifier("STUDY", PatientID="P2", StudyInstanceUID="")
    assert _uids(session, by_patient, "StudyInstanceUID") == ["1.2.3"]
    uids = _identifier("STUDY", StudyInstanceUID="1.2.1\\1.2.3")
    assert _uids(session, uids, "StudyInstanceUID") == ["1.2.3", "1.2.1"]


def test_names_match_case_insensitively_and_wildcards_are_not_sql(session: Session) -> None:
    by_name = _identifier("PATIENT", PatientName="doe^jane", PatientID="")
    assert _uids(session, by_name, "PatientID") == ["P1"]  # one answer per patient
    wildcards = _identifier("PATIENT", PatientName="r?SSI*", PatientID="")
    assert _uids(session, wildcards, "PatientID") == ["P2"]
    # "_" and "%" are literal characters in DICOM, never SQL wildcards
    for pattern, found in (("Rossi^Mario_*", ["P2"]), ("Doe^Jan_*", []), ("*%*", [])):
        query = _identifier("PATIENT", PatientName=pattern, PatientID="")
        assert _uids(session, query, "PatientID") == found, pattern


def test_date_and_time_ranges(session: Session) -> None:
    def dated(**keys: str) -> list[str]:
        return _uids(session, _identifier("STUDY", StudyInstanceUID="", **keys), "StudyInstanceUID")

    assert dated(StudyDate="20250101-20250331") == ["1.2.1"]
    assert dated(StudyDate="20250401-") == ["1.2.2"]
    assert dated(StudyDate="-20241231") == ["1.2.3"]
    # an upper time bound without fractions takes in the whole second it names
    assert dated(StudyTime="-083000") == ["1.2.2"]


def test_series_answers_carry_the_study_above_and_their_counts(session: Session) -> None:
    identifier = _identifier(
        "SERIES",
        StudyInstanceUID="1.2.1",
        SeriesInstanceUID="",
        Modality="CT",
        NumberOfSeriesRelatedInstances="",
        PatientName="",
    )
    (answer,) = find(session, identifier)
    assert answer.SeriesInstanceUID == "1.2.1.2"
    assert answer.NumberOfSeriesRelatedInstances == 4
    assert str(answer.PatientName) == "Doe^Jane"


def test_modalities_in_study_matches_any_listed_modality(session: Session) -> None:
    identifier = _identifier(
        "STUDY",
        StudyInstanceUID="",
        ModalitiesInStudy="CT",
        NumberOfStudyRelatedInstances="",
    )
    answers = list(find(session, identifier))
    assert [a.StudyInstanceUID for a in answers] == ["1.2.3", "1.2.1"]
    assert list(answers[1].ModalitiesInStudy) == ["CT", "MR"]
    assert answers[1].NumberOfStudyRelatedInstances == 8


def test_a_key_below_the_query_level_is_not_matched_or_returned(session: Session) -> None:
    identifier = _identifier("STUDY", StudyInstanceUID="1.2.2", SeriesInstanceUID="9.9")
    (answer,) = find(session, identifier)
    assert answer.SeriesInstanceUID is None


def test_a_query_without_a_known_level_is_refused(session: Session) -> None:
    with pytest.raises(QueryError, match="QueryRetrieveLevel"):
        list(find(session, _identifier("FRAME")))
    with pytest.raises(QueryError, match="missing"):
        list(find(session, Dataset()))


def test_retrieve_names_instances_by_unique_keys_only(session: Session) -> None:
    series = retrieve_keys(session, _identifier("SERIES", SeriesInstanceUID="1.2.1.2"))
    assert [key[3] for key in series] == [f"1.2.1.2.{i}" for i in range(1, 5)]
    assert series[0][0] == "instances/1.2.1.2/1.dcm"
    patient = retrieve_keys(session, _identifier("PATIENT", PatientID="P1"))
    assert len(patient) == 4 + 4 + 2
    with pytest.raises(QueryError, match="unique key"):
        retrieve_keys(session, _identifier("STUDY", PatientName="Doe^Jane"))
