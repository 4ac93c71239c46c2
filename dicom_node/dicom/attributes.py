"""The attributes the index keeps for queries, as one table shared by receive and C-FIND.

Each row names a DICOM keyword, the query level it belongs to (PS3.4 C.6.1.1), the
database column that holds it and that column's length. Values are read leniently: a
missing, malformed or over-long value becomes empty or is cut, never an error, because
indexing must not refuse an instance for a descriptive attribute.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydicom.charset import convert_encodings, decode_bytes
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.valuerep import TEXT_VR_DELIMS, PersonName

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


_TEXT_VRS = frozenset({"PN", "LO", "SH", "LT", "ST", "UT", "UC"})
"""VRs whose values follow Specific Character Set; the others are ASCII (PS3.5 6.1.2)."""
_SPECIFIC_CHARACTER_SET = 0x00080005


class HeaderReader:
    """Reads index attributes from a data set's raw elements, without pydicom's value
    conversion: on the receive path, converting each element (keyword lookup, value
    object, validation) cost more than the rest of indexing. Text is decoded with
    pydicom's own character-set decoding, so values are those ``text`` would give;
    an element pydicom already converted is read through ``text``."""

    def __init__(self, ds: Dataset) -> None:
        self.ds = ds
        charset = ds.get_item(_SPECIFIC_CHARACTER_SET)
        names = None
        if charset is not None and charset.value:
            raw = charset.value
            value = raw.decode("ascii", "replace") if isinstance(raw, bytes) else raw
            names = [v.strip() for v in value.split("\\")] if isinstance(value, str) else value
        try:
            self.encodings = convert_encodings(names)
        except LookupError:
            self.encodings = convert_encodings(None)

    def text(self, keyword: str, length: int) -> str:
        tag, vr = _TAGS[keyword]
        element = self.ds.get_item(tag)
        if element is None:
            return ""
        if not isinstance(element, RawDataElement):
            return text(self.ds, keyword, length)
        raw = element.value
        if not raw:
            return ""
        try:
            if vr in _TEXT_VRS:
                decoded = decode_bytes(raw, self.encodings, TEXT_VR_DELIMS)
                if vr == "PN":
                    names = (PersonName(v.rstrip(" \x00")) for v in decoded.split("\\"))
                    decoded = "\\".join(str(name) for name in names)
            else:
                decoded = raw.decode("ascii")
        except (UnicodeError, LookupError, ValueError):
            return ""
        values = "\\".join(v.strip(" \x00") for v in decoded.split("\\"))
        return values.strip().rstrip("\x00")[:length]

    def number(self, keyword: str) -> int | None:
        value = self.text(keyword, 12)
        try:
            return int(value) if value else None
        except ValueError:
            return None


_TAGS: dict[str, tuple[int, str]] = {
    k.keyword: (int(tag_for_keyword(k.keyword) or 0), dictionary_VR(k.keyword)) for k in KEYS
}
LAST_INDEXED_TAG = max(tag for tag, _ in _TAGS.values())
"""A header read up to here holds every attribute the index keeps."""


def _texts(header: HeaderReader, level: Level) -> dict[str, str]:
    return {
        k.column: header.text(k.keyword, k.length)
        for k in KEYS
        if (k.level == level or (level == "STUDY" and k.level == "PATIENT"))
        and not k.numeric
        and not k.column.endswith("_uid")
        and k.column != "modality"
    }


def study_attributes(header: HeaderReader) -> StudyAttributes:
    return StudyAttributes(**_texts(header, "STUDY"))


def series_attributes(header: HeaderReader) -> SeriesAttributes:
    return SeriesAttributes(
        series_number=header.number("SeriesNumber"),
        series_description=header.text("SeriesDescription", 64),
    )
