"""Query/Retrieve SCP: workstations find and fetch what the node holds — the studies it
received and the synthetic series it made — with C-FIND, C-GET and C-MOVE.

Patient Root and Study Root information models (PS3.4 C.6), relational queries at the
PATIENT, STUDY, SERIES and IMAGE levels. Matching follows PS3.4 C.2.2.2: universal
(empty value: return the attribute), single value (person names case-insensitively),
wildcards ``*`` and ``?``, date and time ranges, and lists of UIDs. Retrieval reads the
spool files and sends them as stored.

Nobody may query or retrieve unless listed in ``query_retrieve.allowed_calling_aets``
(and, where bound, calling from one of its ``calling_ae_hosts``): the answers carry
patient data. Others are answered Refused: Not Authorized (0124, PS3.7 C.5) for C-FIND
and C-GET; for C-MOVE pynetdicom lets a handler refuse only as Move Destination Unknown
(A801), which it then is for that caller.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, cast

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pynetdicom import build_context
from pynetdicom.events import Event
from sqlalchemy import Select, false, func, select
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from dicom_node.config import Config
from dicom_node.dicom.attributes import BY_KEYWORD, Key, Level
from dicom_node.dicom.status import QueryRetrieveStatus
from dicom_node.net.access import AccessPolicy
from dicom_node.net.ae import UNCOMPRESSED
from dicom_node.net.tls import tls_args
from dicom_node.obs.logs import emit, get_logger
from storage.database import Database
from storage.models import Instance, Series, Study
from storage.spool import Spool

log = get_logger("query")

LEVELS: tuple[Level, ...] = ("PATIENT", "STUDY", "SERIES", "IMAGE")
SOP_CLASSES = (
    "1.2.840.10008.5.1.4.1.2.1.1",  # Patient Root FIND
    "1.2.840.10008.5.1.4.1.2.1.2",  # Patient Root MOVE
    "1.2.840.10008.5.1.4.1.2.1.3",  # Patient Root GET
    "1.2.840.10008.5.1.4.1.2.2.1",  # Study Root FIND
    "1.2.840.10008.5.1.4.1.2.2.2",  # Study Root MOVE
    "1.2.840.10008.5.1.4.1.2.2.3",  # Study Root GET
)
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


def _base(level: Level) -> Select[Any]:
    if level in ("PATIENT", "STUDY"):
        return select(Study)
    if level == "SERIES":
        return cast(Select[Any], select(Series, Study).join(Study, Study.id == Series.study_id))
    return cast(
        Select[Any],
        select(Instance, Series, Study)
        .join(Series, Series.id == Instance.series_id)
        .join(Study, Study.id == Series.study_id),
    )


def _visible(level: Level) -> set[Level]:
    return set(LEVELS[: LEVELS.index(level) + 1]) | ({"PATIENT"} if level != "PATIENT" else set())


@dataclass(frozen=True)
class Match:
    """One answer to a C-FIND, as database rows of its level and the levels above."""

    study: Study
    series: Series | None = None
    instance: Instance | None = None


def find(session: Session, identifier: Dataset) -> Iterator[Dataset]:
    """The responses to a C-FIND identifier (relational: any key of its level or above)."""
    level = _level(identifier)
    visible = _visible(level)
    query = _base(level)
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
            .where(Series.study_id == Study.id, Series.modality.in_(wanted))
            .exists()
        )
    seen_patients: set[str] = set()
    for row in session.execute(query.order_by(*_order(level))):
        match = _match(level, row)
        if level == "PATIENT":
            if match.study.patient_id in seen_patients:
                continue
            seen_patients.add(match.study.patient_id)
        yield _response(session, identifier, level, match)


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


def _count(session: Session, keyword: str, match: Match) -> Any:
    study = match.study
    if keyword == "NumberOfPatientRelatedStudies":
        return session.scalar(
            select(func.count(Study.id)).where(Study.patient_id == study.patient_id)
        )
    if keyword == "NumberOfStudyRelatedSeries":
        return session.scalar(select(func.count(Series.id)).where(Series.study_id == study.id))
    if keyword == "NumberOfStudyRelatedInstances":
        return session.scalar(
            select(func.count(Instance.id))
            .join(Series, Series.id == Instance.series_id)
            .where(Series.study_id == study.id)
        )
    if keyword == "NumberOfSeriesRelatedInstances" and match.series is not None:
        return session.scalar(
            select(func.count(Instance.id)).where(Instance.series_id == match.series.id)
        )
    if keyword == "ModalitiesInStudy":
        return sorted(
            set(session.scalars(select(Series.modality).where(Series.study_id == study.id))) - {""}
        )
    return None


def _response(session: Session, identifier: Dataset, level: Level, match: Match) -> Dataset:
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
            value = _count(session, keyword, match)
        else:
            value = None
        setattr(out, keyword, value if value != "" else None)
    return out


def retrieve_keys(session: Session, identifier: Dataset) -> list[tuple[str, str, str, str]]:
    """(spool key, SOP Class UID, transfer syntax, SOP Instance UID) of every instance a
    C-GET or C-MOVE identifier names, by the unique keys of its level and the levels
    above."""
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


class QueryRetrieveSCP:
    """The C-FIND, C-GET and C-MOVE handlers of the node's AE."""

    def __init__(self, config: Config, db: Database, spool: Spool) -> None:
        self.config = config
        self.db = db
        self.spool = spool
        settings = config.query_retrieve
        self.policy = AccessPolicy.from_config(
            settings.allowed_calling_aets,
            settings.calling_ae_hosts,
            open_when_empty=False,
            key="query_retrieve.allowed_calling_aets",
        )

    def _refused(self, event: Event, service: str) -> bool:
        """True (and logged) when the calling AE may not use Query/Retrieve."""
        requestor = event.assoc.requestor
        calling_ae = str(requestor.ae_title).strip()
        reason = self.policy.refusal(calling_ae, str(requestor.address))
        if reason is None:
            return False
        emit(
            log,
            "query.refused",
            30,
            service=service,
            calling_ae=calling_ae,
            address=str(requestor.address),
            reason=reason,
        )
        return True

    def on_find(self, event: Event) -> Iterator[tuple[int, Dataset | None]]:
        if self._refused(event, "C-FIND"):
            yield QueryRetrieveStatus.NOT_AUTHORIZED, None
            return
        identifier = event.identifier
        try:
            with self.db.session() as session:
                answers = list(find(session, identifier))
        except QueryError as exc:
            emit(log, "find.refused", 30, reason=str(exc))
            yield QueryRetrieveStatus.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS, None
            return
        emit(
            log,
            "find",
            query_level=str(identifier.get("QueryRetrieveLevel", "")),
            matches=len(answers),
            calling_ae=str(event.assoc.requestor.ae_title).strip(),
        )
        for answer in answers:
            if event.is_cancelled:
                yield QueryRetrieveStatus.CANCEL, None
                return
            yield QueryRetrieveStatus.PENDING, answer

    def _instances(self, event: Event) -> list[tuple[str, str, str, str]] | None:
        try:
            with self.db.session() as session:
                return retrieve_keys(session, event.identifier)
        except QueryError as exc:
            emit(log, "retrieve.refused", 30, reason=str(exc))
            return None

    def _datasets(
        self, event: Event, keys: Sequence[tuple[str, str, str, str]]
    ) -> Iterator[tuple[int, Dataset | None]]:
        """The C-STORE sub-operations' data sets. A spool file that cannot be read costs
        its own instance only: the rest are sent, and the final response is a Warning
        whose Failed SOP Instance UID List names the unread ones (PS3.4 C.4.2.1.5,
        C.4.3.1.4); pynetdicom counts them as failed sub-operations."""
        unread: list[str] = []
        for key, _, _, sop_instance_uid in keys:
            if event.is_cancelled:
                yield QueryRetrieveStatus.CANCEL, None
                return
            try:
                dataset = pydicom.dcmread(self.spool.path(key))
            except (OSError, ValueError, InvalidDicomError) as exc:
                emit(
                    log,
                    "retrieve.unreadable",
                    40,
                    spool_key=key,
                    sop_instance_uid=sop_instance_uid,
                    reason=str(exc),
                )
                unread.append(sop_instance_uid)
                continue
            yield QueryRetrieveStatus.PENDING, dataset
        if unread:
            failed = Dataset()
            failed.FailedSOPInstanceUIDList = unread
            yield QueryRetrieveStatus.SUB_OPERATIONS_COMPLETE_WITH_FAILURES, failed

    def on_get(self, event: Event) -> Iterator[Any]:
        if self._refused(event, "C-GET"):
            # pynetdicom answers a count of 0 with Success: one (never started)
            # sub-operation lets the refusal be the final status
            yield 1
            yield QueryRetrieveStatus.NOT_AUTHORIZED, None
            return
        keys = self._instances(event)
        if keys is None:
            yield 0
            yield QueryRetrieveStatus.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS, None
            return
        emit(
            log, "get", instances=len(keys), calling_ae=str(event.assoc.requestor.ae_title).strip()
        )
        yield len(keys)
        yield from self._datasets(event, keys)

    def on_move(self, event: Event) -> Iterator[Any]:
        if self._refused(event, "C-MOVE"):
            yield None, None  # answered A801: pynetdicom's only refusal before sub-operations
            return
        target = str(event.move_destination or "").strip()
        destination = self.config.destination_for_ae(target)
        if destination is None:
            emit(
                log,
                "move.refused",
                30,
                move_destination=target,
                reason="not a configured destination",
            )
            yield None, None
            return
        keys = self._instances(event)
        if keys is None:
            yield None, None
            return
        contexts = _contexts(keys)
        options: dict[str, Any] = {"contexts": contexts}
        secure = tls_args(destination, self.config.path)
        if secure is not None:
            options["tls_args"] = secure
        emit(
            log,
            "move",
            instances=len(keys),
            destination=destination.name,
            calling_ae=str(event.assoc.requestor.ae_title).strip(),
        )
        yield destination.host, destination.port, options
        yield len(keys)
        yield from self._datasets(event, keys)


def _contexts(keys: Sequence[tuple[str, str, str, str]]) -> list[Any]:
    """One presentation context per SOP class: its stored syntaxes, then uncompressed."""
    by_class: dict[str, list[str]] = {}
    for _, sop_class, syntax, _ in keys:
        syntaxes = by_class.setdefault(sop_class, [])
        for ts in (syntax, *UNCOMPRESSED):
            if ts not in syntaxes:
                syntaxes.append(ts)
    return [build_context(sop_class, syntaxes) for sop_class, syntaxes in by_class.items()][:128]
