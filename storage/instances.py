"""Indexing of received instances: the receive stage's commit.

One call per instance, inside the transaction that also re-opens the instance's study
(state back to RECEIVING, last_received_at moved on), so that an instance is either
indexed and counted towards its study's stability, or not recorded at all.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, delete, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from storage.models import Base, Instance, Series, Study, StudyState


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


def _insert(conn: Connection | Session, table: type[Base]) -> Any:
    """INSERT with ON CONFLICT support for the connection's dialect (SQLite, PostgreSQL)."""
    dialect = conn.get_bind().dialect.name if isinstance(conn, Session) else conn.dialect.name
    return (pg_insert if dialect == "postgresql" else sqlite_insert)(table)


def record_instance(conn: Connection | Session, rec: ReceivedInstance) -> None:
    """Indexes a spooled instance; a re-sent instance replaces its earlier row.

    Three upserts (study, series, instance), each safe against a concurrent
    association indexing the same study or series at the same moment. The last copy of
    a SOP Instance UID wins within its study: resent in another series (a series
    corrected at the PACS), the instance leaves the series it was in, so that no input
    of a job holds a slice that moved away. (Its earlier spool file is left in place;
    start-up reconciliation knows it is superseded.)
    """
    reopen = {
        "state": StudyState.RECEIVING,
        "last_received_at": rec.received_at,
        "last_calling_ae": rec.calling_ae,
        **asdict(rec.study),
    }
    stmt = _insert(conn, Study).values(
        study_uid=rec.study_uid, first_received_at=rec.received_at, **reopen
    )
    study_id = conn.execute(
        stmt.on_conflict_do_update(index_elements=[Study.study_uid], set_=reopen).returning(
            Study.id
        )
    ).scalar_one()
    series_id = upsert_series(
        conn, study_id, rec.series_uid, rec.modality, rec.sop_class_uid, rec.series
    )
    values = {
        "sop_class_uid": rec.sop_class_uid,
        "transfer_syntax_uid": rec.transfer_syntax_uid,
        "spool_key": rec.spool_key,
        "size_bytes": rec.size_bytes,
        "received_at": rec.received_at,
        "calling_ae": rec.calling_ae,
        "instance_number": rec.instance_number,
    }
    stmt = _insert(conn, Instance).values(
        series_id=series_id, sop_instance_uid=rec.sop_instance_uid, **values
    )
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=[Instance.series_id, Instance.sop_instance_uid], set_=values
        )
    )
    conn.execute(
        delete(Instance).where(
            Instance.sop_instance_uid == rec.sop_instance_uid,
            Instance.series_id.in_(
                select(Series.id).where(Series.study_id == study_id, Series.id != series_id)
            ),
        )
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
    stmt = _insert(conn, Series).values(
        study_id=study_id,
        series_uid=series_uid,
        modality=modality,
        sop_class_uid=sop_class_uid,
        **asdict(attributes),
    )
    return int(
        conn.execute(
            stmt.on_conflict_do_update(
                index_elements=[Series.series_uid], set_=asdict(attributes)
            ).returning(Series.id)
        ).scalar_one()
    )


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
