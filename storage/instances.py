"""Indexing of received instances: the receive stage's commit.

One call per instance, inside the transaction that also re-opens the instance's study
(state back to RECEIVING, last_received_at moved on), so that an instance is either
indexed and counted towards its study's stability, or not recorded at all.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Dialect, TextClause, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from storage.models import Instance, Series, Study, StudyState, UTCDateTime


@dataclass(frozen=True)
class StudyAttributes:
    """What a query can match a study on (PS3.4 C.6.2.1.2 Study level keys)."""

    patient_name: str = ""
    patient_id: str = ""
    patient_birth_date: str = ""
    patient_sex: str = ""
    study_date: str = ""
    study_time: str = ""
    accession_number: str = ""
    study_id: str = ""
    study_description: str = ""
    referring_physician_name: str = ""


@dataclass(frozen=True)
class SeriesAttributes:
    series_number: int | None = None
    series_description: str = ""


@dataclass(frozen=True)
class ReceivedInstance:
    study_uid: str
    series_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    modality: str
    spool_key: str
    size_bytes: int
    calling_ae: str
    received_at: datetime
    study: StudyAttributes = field(default_factory=StudyAttributes)
    series: SeriesAttributes = field(default_factory=SeriesAttributes)
    instance_number: int | None = None


def _columns(names: list[str]) -> tuple[str, str]:
    return ", ".join(names), ", ".join(f":{n}" for n in names)


def _updates(names: list[str]) -> str:
    return ", ".join(f"{n} = excluded.{n}" for n in names)


_STUDY_FIELDS = [f.name for f in fields(StudyAttributes)]
_SERIES_FIELDS = [f.name for f in fields(SeriesAttributes)]
_NAMES: dict[type, list[str]] = {StudyAttributes: _STUDY_FIELDS, SeriesAttributes: _SERIES_FIELDS}
_REOPEN = ["state", "last_received_at", "last_calling_ae", *_STUDY_FIELDS]
_INSTANCE_FIELDS = [
    "sop_class_uid",
    "transfer_syntax_uid",
    "spool_key",
    "size_bytes",
    "received_at",
    "calling_ae",
    "instance_number",
]
_TIMES = ("first_received_at", "last_received_at", "received_at")


@dataclass(frozen=True)
class _Driver:
    """A statement as the database driver takes it: its SQL, the order of positional
    parameters (None for named ones), and the conversion of time parameters."""

    sql: str
    order: tuple[str, ...] | None
    convert_time: Callable[[Any], Any]


@functools.lru_cache(maxsize=32)
def _for_driver(stmt: TextClause, dialect: Dialect) -> _Driver:
    compiled = stmt.compile(dialect=dialect)
    order = tuple(compiled.positiontup) if compiled.positional and compiled.positiontup else None
    processor = UTCDateTime().bind_processor(dialect)
    return _Driver(str(compiled), order, processor or (lambda value: value))


def _execute(conn: Connection | Session, stmt: TextClause, params: dict[str, Any]) -> Any:
    """Runs ``stmt`` on the DB-API cursor of the transaction ``conn`` holds.

    The receive stage runs these statements once per instance; through SQLAlchemy's
    statement execution they cost more than twice what the database does (measured on
    SQLite: 0.6 ms against 0.25 ms per instance). Compiled once per dialect and run on
    the same connection, inside the same transaction, they do the same work; the
    ``INSERT … ON CONFLICT … RETURNING`` form is shared by SQLite and PostgreSQL, and
    times are converted as the models' UTC type converts them.
    """
    connection = conn.connection() if isinstance(conn, Session) else conn
    driver = _for_driver(stmt, connection.dialect)
    for key in _TIMES:
        if key in params:
            params[key] = driver.convert_time(params[key])
    arguments = [params[k] for k in driver.order] if driver.order else params
    cursor = connection.connection.cursor()
    dbapi_error = connection.dialect.loaded_dbapi.Error
    try:
        cursor.execute(driver.sql, arguments)
    except dbapi_error as exc:
        # the same exception SQLAlchemy would raise, parameters (patient data) hidden
        raise DBAPIError.instance(
            driver.sql,
            arguments,
            exc,
            dbapi_error,
            hide_parameters=True,
            dialect=connection.dialect,
        ) from exc
    return cursor


def _returned_id(cursor: Any) -> int:
    row = cursor.fetchone()
    if row is None:
        raise RuntimeError("an upsert returned no row id")
    return int(row[0])


_UPSERT_STUDY = text(
    "INSERT INTO study (study_uid, first_received_at, {}) VALUES (:study_uid, "
    ":first_received_at, {}) ON CONFLICT (study_uid) DO UPDATE SET {} RETURNING id".format(
        *_columns(_REOPEN), _updates(_REOPEN)
    )
)
_UPSERT_SERIES = text(
    "INSERT INTO series (study_id, series_uid, modality, sop_class_uid, {}) VALUES "
    "(:study_id, :series_uid, :modality, :sop_class_uid, {}) ON CONFLICT (series_uid) "
    "DO UPDATE SET {} RETURNING id".format(*_columns(_SERIES_FIELDS), _updates(_SERIES_FIELDS))
)
_UPSERT_INSTANCE = text(
    "INSERT INTO instance (series_id, sop_instance_uid, {}) VALUES (:series_id, "
    ":sop_instance_uid, {}) ON CONFLICT (series_id, sop_instance_uid) DO UPDATE SET {}".format(
        *_columns(_INSTANCE_FIELDS), _updates(_INSTANCE_FIELDS)
    )
)
_LEAVE_OTHER_SERIES = text(
    "DELETE FROM instance WHERE sop_instance_uid = :sop_instance_uid AND series_id IN "
    "(SELECT id FROM series WHERE study_id = :study_id AND id != :series_id)"
)


def record_instance(conn: Connection | Session, rec: ReceivedInstance) -> None:
    """Indexes a spooled instance; a re-sent instance replaces its earlier row.

    Three upserts (study, series, instance), each safe against a concurrent
    association indexing the same study or series at the same moment. The last copy of
    a SOP Instance UID wins within its study: resent in another series (a series
    corrected at the PACS), the instance leaves the series it was in, so that no input
    of a job holds a slice that moved away. (Its earlier spool file is left in place;
    start-up reconciliation knows it is superseded.)
    """
    study_id = _returned_id(
        _execute(
            conn,
            _UPSERT_STUDY,
            {
                "study_uid": rec.study_uid,
                "first_received_at": rec.received_at,
                "state": StudyState.RECEIVING.value,
                "last_received_at": rec.received_at,
                "last_calling_ae": rec.calling_ae,
                **_fields(rec.study),
            },
        )
    )
    series_id = upsert_series(
        conn, study_id, rec.series_uid, rec.modality, rec.sop_class_uid, rec.series
    )
    _execute(
        conn,
        _UPSERT_INSTANCE,
        {
            "series_id": series_id,
            "sop_instance_uid": rec.sop_instance_uid,
            "sop_class_uid": rec.sop_class_uid,
            "transfer_syntax_uid": rec.transfer_syntax_uid,
            "spool_key": rec.spool_key,
            "size_bytes": rec.size_bytes,
            "received_at": rec.received_at,
            "calling_ae": rec.calling_ae,
            "instance_number": rec.instance_number,
        },
    )
    _execute(
        conn,
        _LEAVE_OTHER_SERIES,
        {"sop_instance_uid": rec.sop_instance_uid, "study_id": study_id, "series_id": series_id},
    )


def upsert_series(
    conn: Connection | Session,
    study_id: int,
    series_uid: str,
    modality: str,
    sop_class_uid: str,
    attributes: SeriesAttributes,
) -> int:
    """The series row's id, created if new; its query attributes follow the latest copy."""
    params = {
        "study_id": study_id,
        "series_uid": series_uid,
        "modality": modality,
        "sop_class_uid": sop_class_uid,
        **_fields(attributes),
    }
    return _returned_id(_execute(conn, _UPSERT_SERIES, params))


def _fields(attributes: StudyAttributes | SeriesAttributes) -> dict[str, Any]:
    """The attributes as parameters (``dataclasses.asdict`` deep-copies every value)."""
    return {name: getattr(attributes, name) for name in _NAMES[type(attributes)]}


def indexed_keys(session: Session) -> set[str]:
    """Spool keys of every indexed instance, for start-up reconciliation."""
    return set(session.scalars(select(Instance.spool_key)))


def superseding_row(session: Session, rec: ReceivedInstance) -> tuple[str, datetime] | None:
    """The spool key and time of receipt of the row that holds ``rec``'s SOP Instance UID
    in its study under another spool key, if there is one."""
    row = session.execute(
        select(Instance.spool_key, Instance.received_at)
        .join(Series, Series.id == Instance.series_id)
        .join(Study, Study.id == Series.study_id)
        .where(
            Study.study_uid == rec.study_uid,
            Instance.sop_instance_uid == rec.sop_instance_uid,
            Instance.spool_key != rec.spool_key,
        )
    ).first()
    return (str(row[0]), row[1]) if row is not None else None
