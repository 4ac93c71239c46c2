"""C-FIND matching over the node's index, shared by every query service: the DIMSE Q/R
SCP today (:mod:`dicom_node.query.dimse`), DICOMweb QIDO-RS when it comes.

Patient Root and Study Root information models (PS3.4 C.6), relational queries at the
PATIENT, STUDY, SERIES and IMAGE levels. Matching follows PS3.4 C.2.2.2: universal
(empty value: return the attribute), single value (person names case-insensitively),
wildcards ``*`` and ``?``, date and time ranges, and lists of UIDs. An answer carries
the attributes the identifier asked for, from the rows of its level and the levels above,
and the counts (Number of … Related …, Modalities in Study) computed from the index.
What a retrieve names is selected here too, by the unique keys of its level and above.

The node's own outputs are served only once cleared for sending (released, delivered):
one written, awaiting review or rejected is neither found, counted nor retrieved, so no
workstation reads an unreviewed or rejected synthetic series, unless the caller asks
for them (``query_retrieve.serve_unreleased_outputs``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, cast

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from sqlalchemy import Select, false, func, select, true
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from dicom_node.dicom.attributes import BY_KEYWORD, Key, Level
from storage.models import Instance, OutputSeries, OutputState, Series, Study

LEVELS: tuple[Level, ...] = ("PATIENT", "STUDY", "SERIES", "IMAGE")
_TABLES = {"PATIENT": Study, "STUDY": Study, "SERIES": Series, "IMAGE": Instance}
_RANGED = {"StudyDate", "StudyTime", "PatientBirthDate"}
_UID_LISTS = {"StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID"}
_COUNTS = {
    "NumberOfPatientRelatedStudies",
    "NumberOfStudyRelatedSeries",
    "NumberOfStudyRelatedInstances",
    "NumberOfSeriesRelatedInstances",
    "ModalitiesInStudy",
}


UNRELEASED = (OutputState.WRITTEN, OutputState.AWAITING_REVIEW, OutputState.REJECTED)
"""Output states not served unless asked for: not (or not yet) cleared for sending."""


def served(unreleased: bool) -> ColumnElement[bool]:
    """The condition on :class:`Series` rows a query may answer with."""
    if unreleased:
        return true()
    held = select(OutputSeries.series_uid).where(OutputSeries.state.in_(UNRELEASED))
    return Series.series_uid.not_in(held)


class QueryError(ValueError):
    """The identifier cannot be answered (no or unknown level); the message says why."""


def _column(key: Key) -> Any:
    return getattr(_TABLES[key.level], key.column)


def _like(pattern: str) -> str:
    escaped = pattern.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%").replace("?", "_")


def _condition(key: Key, value: str) -> ColumnElement[bool] | None:
    """The SQL for one matching key (PS3.4 C.2.2.2), or None for universal matching."""
    column = _column(key)
    if value in ("", "*"):
        return None
    if key.keyword in _UID_LISTS:
        return column.in_([v.strip() for v in value.split("\\") if v.strip()])
    if key.keyword in _RANGED and "-" in value:
        low, high = (part.strip() for part in value.split("-", 1))
        parts = [column >= low] if low else []
        parts += [column <= high + ("~" if key.keyword == "StudyTime" else "")] if high else []
        return parts[0] if len(parts) == 1 else (parts[0] & parts[1])
    if key.numeric:
        try:
            return column == int(value)
        except ValueError:
            return false()
    if "*" in value or "?" in value:
        if key.keyword.endswith("Name"):
            return func.lower(column).like(_like(value.lower()), escape="\\")
        return column.like(_like(value), escape="\\")
    if key.keyword.endswith("Name"):
        return func.lower(column) == value.lower()
    return column == value


def _level(identifier: Dataset) -> Level:
    level = str(identifier.get("QueryRetrieveLevel", "")).strip().upper()
    if level not in LEVELS:
        raise QueryError(f"QueryRetrieveLevel {level or '(missing)'} is not one of {LEVELS}")
    return level


def _base(level: Level, shown: ColumnElement[bool]) -> Select[Any]:
    if level in ("PATIENT", "STUDY"):
        return select(Study)
    if level == "SERIES":
        return cast(
            Select[Any],
            select(Series, Study).join(Study, Study.id == Series.study_id).where(shown),
        )
    return cast(
        Select[Any],
        select(Instance, Series, Study)
        .join(Series, Series.id == Instance.series_id)
        .join(Study, Study.id == Series.study_id)
        .where(shown),
    )


def _visible(level: Level) -> set[Level]:
    return set(LEVELS[: LEVELS.index(level) + 1]) | ({"PATIENT"} if level != "PATIENT" else set())


@dataclass(frozen=True)
class Match:
    """One answer to a C-FIND, as database rows of its level and the levels above."""

    study: Study
    series: Series | None = None
    instance: Instance | None = None


def find(session: Session, identifier: Dataset, unreleased: bool = False) -> Iterator[Dataset]:
    """The responses to a C-FIND identifier (relational: any key of its level or above);
    ``unreleased`` also answers with outputs not cleared for sending."""
    level = _level(identifier)
    visible = _visible(level)
    shown = served(unreleased)
    query = _base(level, shown)
    for element in identifier:
        key = BY_KEYWORD.get(element.keyword)
        if key is None or key.level not in visible:
            continue
        condition = _condition(key, _value(element.value))
        if condition is not None:
            query = query.where(condition)
    modalities = _value(identifier.get("ModalitiesInStudy", "")) if level == "STUDY" else ""
    if modalities:
        wanted = [m for m in modalities.split("\\") if m]
        query = query.where(
            select(Series.id)
            .where(Series.study_id == Study.id, Series.modality.in_(wanted), shown)
            .exists()
        )
    seen_patients: set[str] = set()
    for row in session.execute(query.order_by(*_order(level))):
        match = _match(level, row)
        if level == "PATIENT":
            if match.study.patient_id in seen_patients:
                continue
            seen_patients.add(match.study.patient_id)
        yield _response(session, identifier, level, match, shown)


def _order(level: Level) -> list[Any]:
    order: list[Any] = [Study.study_date, Study.id]
    if level in ("SERIES", "IMAGE"):
        order.append(Series.series_number)
    if level == "IMAGE":
        order.append(Instance.instance_number)
    return order


def _match(level: Level, row: Any) -> Match:
    if level in ("PATIENT", "STUDY"):
        return Match(row[0])
    if level == "SERIES":
        return Match(row[1], row[0])
    return Match(row[2], row[1], row[0])


def _value(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, tuple, MultiValue)):
        return "\\".join(str(v) for v in value)
    return str(value).strip()


def _row_value(key: Key, match: Match) -> Any:
    source = {
        "PATIENT": match.study,
        "STUDY": match.study,
        "SERIES": match.series,
        "IMAGE": match.instance,
    }[key.level]
    return None if source is None else getattr(source, key.column)


def _count(session: Session, keyword: str, match: Match, shown: ColumnElement[bool]) -> Any:
    study = match.study
    if keyword == "NumberOfPatientRelatedStudies":
        return session.scalar(
            select(func.count(Study.id)).where(Study.patient_id == study.patient_id)
        )
    if keyword == "NumberOfStudyRelatedSeries":
        return session.scalar(
            select(func.count(Series.id)).where(Series.study_id == study.id, shown)
        )
    if keyword == "NumberOfStudyRelatedInstances":
        return session.scalar(
            select(func.count(Instance.id))
            .join(Series, Series.id == Instance.series_id)
            .where(Series.study_id == study.id, shown)
        )
    if keyword == "NumberOfSeriesRelatedInstances" and match.series is not None:
        return session.scalar(
            select(func.count(Instance.id)).where(Instance.series_id == match.series.id)
        )
    if keyword == "ModalitiesInStudy":
        return sorted(
            set(session.scalars(select(Series.modality).where(Series.study_id == study.id, shown)))
            - {""}
        )
    return None


def _response(
    session: Session,
    identifier: Dataset,
    level: Level,
    match: Match,
    shown: ColumnElement[bool],
) -> Dataset:
    out = Dataset()
    out.SpecificCharacterSet = "ISO_IR 192"
    out.QueryRetrieveLevel = level
    for element in identifier:
        keyword = element.keyword
        if keyword in ("QueryRetrieveLevel", "SpecificCharacterSet") or not keyword:
            continue
        key = BY_KEYWORD.get(keyword)
        if key is not None and key.level in _visible(level):
            value = _row_value(key, match)
        elif keyword in _COUNTS:
            value = _count(session, keyword, match, shown)
        else:
            value = None
        setattr(out, keyword, value if value != "" else None)
    return out


def retrieve_keys(
    session: Session, identifier: Dataset, unreleased: bool = False
) -> list[tuple[str, str, str, str]]:
    """(spool key, SOP Class UID, transfer syntax, SOP Instance UID) of every instance a
    C-GET or C-MOVE identifier names, by the unique keys of its level and the levels
    above; outputs not cleared for sending only with ``unreleased``."""
    level = _level(identifier)
    query = (
        select(
            Instance.spool_key,
            Instance.sop_class_uid,
            Instance.transfer_syntax_uid,
            Instance.sop_instance_uid,
        )
        .join(Series, Series.id == Instance.series_id)
        .join(Study, Study.id == Series.study_id)
        .where(served(unreleased))
    )
    named = False
    for keyword, column in (
        ("PatientID", Study.patient_id),
        ("StudyInstanceUID", Study.study_uid),
        ("SeriesInstanceUID", Series.series_uid),
        ("SOPInstanceUID", Instance.sop_instance_uid),
    ):
        value = _value(identifier.get(keyword, ""))
        if value:
            query = query.where(column.in_(value.split("\\")))
            named = True
    if not named:
        raise QueryError(f"a {level} retrieve needs the unique key of its level")
    return [(r[0], r[1], r[2], r[3]) for r in session.execute(query.order_by(Instance.id))]
