"""Indexing of received instances: the receive stage's commit.

One call per instance, inside the transaction that also re-opens the instance's study
(state back to RECEIVING, last_received_at moved on), so that an instance is either
indexed and counted towards its study's stability, or not recorded at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from storage.models import Instance, Series, Study, StudyState


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


def _study_id(session: Session, rec: ReceivedInstance) -> int:
    values = {
        "state": StudyState.RECEIVING,
        "last_received_at": rec.received_at,
        "last_calling_ae": rec.calling_ae,
    }
    found = session.execute(
        update(Study).where(Study.study_uid == rec.study_uid).values(**values).returning(Study.id)
    ).scalar()
    if found is not None:
        return found
    return session.execute(
        insert(Study)
        .values(study_uid=rec.study_uid, first_received_at=rec.received_at, **values)
        .returning(Study.id)
    ).scalar_one()


def _series_id(session: Session, rec: ReceivedInstance, study_id: int) -> int:
    found = session.execute(
        select(Series.id, Series.study_id).where(Series.series_uid == rec.series_uid)
    ).first()
    if found is not None:
        return found.id
    return session.execute(
        insert(Series)
        .values(
            study_id=study_id,
            series_uid=rec.series_uid,
            modality=rec.modality,
            sop_class_uid=rec.sop_class_uid,
        )
        .returning(Series.id)
    ).scalar_one()


def record_instance(session: Session, rec: ReceivedInstance) -> None:
    """Indexes a spooled instance; a re-sent instance replaces its earlier row."""
    study_id = _study_id(session, rec)
    series_id = _series_id(session, rec, study_id)
    values = {
        "sop_class_uid": rec.sop_class_uid,
        "transfer_syntax_uid": rec.transfer_syntax_uid,
        "spool_key": rec.spool_key,
        "size_bytes": rec.size_bytes,
        "received_at": rec.received_at,
        "calling_ae": rec.calling_ae,
    }
    updated = session.execute(
        update(Instance)
        .where(Instance.series_id == series_id, Instance.sop_instance_uid == rec.sop_instance_uid)
        .values(**values)
        .returning(Instance.id)
    ).scalar()
    if updated is None:
        session.execute(
            insert(Instance).values(
                series_id=series_id, sop_instance_uid=rec.sop_instance_uid, **values
            )
        )


def indexed_keys(session: Session) -> set[str]:
    """Spool keys of every indexed instance, for start-up reconciliation."""
    return set(session.scalars(select(Instance.spool_key)))
