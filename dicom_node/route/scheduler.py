"""The scheduler: promotes stable studies, routes them into jobs, and hands abandoned
work (from a crashed worker) back to the queue."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from dicom_node.config import Config
from dicom_node.obs.logs import emit, get_logger
from dicom_node.route.assembly import stable_studies, study_series
from dicom_node.route.routing import decide, record_decisions
from inference.card import ModelCard
from storage.database import Database
from storage.models import AuditEvent, Study, StudyState
from storage.queue import release_abandoned
from storage.spool import Spool

log = get_logger("schedule")

TRANSIENT_DATABASE_ERRORS = (OperationalError, PoolTimeoutError)
"""Failures that pass by themselves: SQLite's "database is locked", a PostgreSQL
connection lost or refused (OperationalError, PEP 249), no pooled connection free."""


class Scheduler:
    """One tick: route every study that became stable; release abandoned leases."""

    def __init__(
        self,
        config: Config,
        db: Database,
        spool: Spool,
        cards: dict[str, ModelCard],
        clock: Callable[[], datetime],
    ) -> None:
        self.config = config
        self.db = db
        self.spool = spool
        self.cards = cards
        self.clock = clock

    def run_once(self) -> bool:
        """Returns True when it did something (so the loop can go on without sleeping)."""
        routed = self.route_stable()
        with self.db.session() as session:
            jobs, deliveries = release_abandoned(
                session,
                self.clock(),
                self.config.scheduler.job_max_attempts,
                self.config.dispatch.max_attempts,
            )
        if jobs or deliveries:
            emit(log, "work.released", 30, jobs=jobs, deliveries=deliveries)
        return routed > 0

    def route_stable(self) -> int:
        """Routes each stable study in its own transaction; returns how many were decided.

        A transient failure (the database locked or unreachable) rolls the study's
        transaction back and leaves it stable, so the next tick routes it again. Any
        other failure marks it routed with the reason recorded, so it cannot block the
        others; a new instance re-opens it.
        """
        stable = self.config.node.stable_seconds
        with self.db.session() as session:
            ids = [s.id for s in stable_studies(session, self.clock(), stable)]
        decided = 0
        for study_id in ids:
            try:
                self._route(study_id, stable)
            except TRANSIENT_DATABASE_ERRORS as exc:
                emit(
                    log,
                    "study.route_retry",
                    30,
                    study_id=study_id,
                    reason=f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}",
                )
                continue
            except Exception as exc:  # the stage's outer loop: record and go on
                self._record_failure(study_id, exc)
            decided += 1
        return decided

    def _route(self, study_id: int, stable_seconds: float) -> None:
        now = self.clock()
        with self.db.session() as session:
            study = session.get(Study, study_id, with_for_update=True)
            cutoff = now - timedelta(seconds=stable_seconds)
            if (
                study is None
                or study.state != StudyState.RECEIVING
                or (study.last_received_at > cutoff)
            ):
                return
            sender = self.config.destination_for_ae(study.last_calling_ae)
            decisions = decide(
                study_series(session, study, self.spool),
                self.config.series_roles,
                self.config.routes,
                self.cards,
                sender.name if sender else None,
                self.config.series_exclusions,
            )
            jobs = record_decisions(session, study, decisions, now)
            study.state = StudyState.ROUTED
            study.routed_at = now
            emit(
                log,
                "study.routed",
                study_uid=study.study_uid,
                jobs=[j.model_id for j in jobs],
                decisions={d.model: d.reason for d in decisions},
            )

    def _record_failure(self, study_id: int, exc: Exception) -> None:
        now = self.clock()
        with self.db.session() as session:
            study = session.get(Study, study_id)
            if study is None:
                return
            study.state = StudyState.ROUTED
            study.routed_at = now
            reason = f"routing failed: {type(exc).__name__}: {exc}"
            session.add(
                AuditEvent(
                    at=now, kind="route.error", study_uid=study.study_uid, detail={"reason": reason}
                )
            )
        emit(log, "study.route_failed", 40, study_uid=study.study_uid, reason=reason)
