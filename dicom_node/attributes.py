"""The attributes the index keeps for queries, as one table shared by receive and C-FIND.

Each row names a DICOM keyword, the query level it belongs to (PS3.4 C.6.1.1), the
database column that holds it and that column's length. Values are read leniently: a
missing, malformed or over-long value becomes empty or is cut, never an error, because
indexing must not refuse an instance for a descriptive attribute.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydicom.dataset import Dataset

from storage.instances import SeriesAttributes, StudyAttributes

Level = Literal["PATIENT", "STUDY", "SERIES", "IMAGE"]


@dataclass(frozen=True)
class Key:
    keyword: str
    level: Level
    column: str
    length: int
    numeric: bool = False


KEYS: tuple[Key, ...] = (
    Key("PatientName", "PATIENT", "patient_name", 324),
    Key("PatientID", "PATIENT", "patient_id", 64),
    Key("PatientBirthDate", "PATIENT", "patient_birth_date", 8),
    Key("PatientSex", "PATIENT", "patient_sex", 16),
    Key("StudyInstanceUID", "STUDY", "study_uid", 64),
    Key("StudyDate", "STUDY", "study_date", 8),
    Key("StudyTime", "STUDY", "study_time", 16),
    Key("AccessionNumber", "STUDY", "accession_number", 16),
    Key("StudyID", "STUDY", "study_id", 16),
    Key("StudyDescription", "STUDY", "study_description", 64),
    Key("ReferringPhysicianName", "STUDY", "referring_physician_name", 324),
    Key("SeriesInstanceUID", "SERIES", "series_uid", 64),
    Key("Modality", "SERIES", "modality", 16),
    Key("SeriesNumber", "SERIES", "series_number", 12, numeric=True),
    Key("SeriesDescription", "SERIES", "series_description", 64),
    Key("SOPInstanceUID", "IMAGE", "sop_instance_uid", 64),
    Key("SOPClassUID", "IMAGE", "sop_class_uid", 64),
    Key("InstanceNumber", "IMAGE", "instance_number", 12, numeric=True),
)
BY_KEYWORD = {k.keyword: k for k in KEYS}


def text(ds: Dataset, keyword: str, length: int) -> str:
    """The attribute as text (multiple values joined by a backslash), at most ``length``."""
    try:
        value = ds.get(keyword)
        if value is None:
            return ""
        joined = "\\".join(str(v) for v in value) if isinstance(value, list) else str(value)
    except (ValueError, TypeError, KeyError, LookupError, UnicodeError):
        return ""
    return joined.strip().rstrip("\x00")[:length]


def number(ds: Dataset, keyword: str) -> int | None:
    try:
        value = ds.get(keyword)
        return None if value in (None, "") else int(value)
    except (ValueError, TypeError, KeyError, OverflowError):
        return None


def _texts(ds: Dataset, level: Level) -> dict[str, str]:
    return {
        k.column: text(ds, k.keyword, k.length)
        for k in KEYS
        if (k.level == level or (level == "STUDY" and k.level == "PATIENT"))
        and not k.numeric
        and not k.column.endswith("_uid")
        and k.column != "modality"
    }


def study_attributes(ds: Dataset) -> StudyAttributes:
    return StudyAttributes(**_texts(ds, "STUDY"))


def series_attributes(ds: Dataset) -> SeriesAttributes:
    return SeriesAttributes(
        series_number=number(ds, "SeriesNumber"),
        series_description=text(ds, "SeriesDescription", 64),
    )
