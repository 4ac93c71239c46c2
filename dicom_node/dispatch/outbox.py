"""The outbox: written output series are released and their deliveries queued, or held
for review.

The synthesis job only writes a series (state ``written``, with the destinations its
route named); this step, in the dispatch stage, moves it to ``released`` and queues one
delivery per destination in the same transaction. A series of a route with
``review: true`` goes to ``awaiting_review`` instead, and nothing is queued: a person
releases it (:mod:`dicom_node.ops.review`). A re-run of the job writes the series again
(``written``), and releasing it re-arms its deliveries: the destination gets the new
version. A decision taken on the earlier version does not carry over to the new pixels:
it is recorded as superseded here, and a reviewed route's series awaits review again.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from dicom_node.obs.logs import emit, get_logger
from storage.database import Database
from storage.models import AuditEvent, Delivery, DeliveryState, Job, OutputSeries, OutputState

log = get_logger("dispatch")

DECISIONS = ("review.approved", "review.rejected")
"""Audit kinds of a reviewer's decision (:mod:`dicom_node.ops.review` records them)."""
REVIEW_EVENTS = (*DECISIONS, "review.awaiting", "review.superseded")
"""Every audit kind of the review gate, oldest to newest telling a series' review story."""


def latest_review_event(session: Session, series_uid: str) -> AuditEvent | None:
    """The newest review audit event of an output series, or None."""
    return session.scalar(
        select(AuditEvent)
        .where(AuditEvent.series_uid == series_uid, AuditEvent.kind.in_(REVIEW_EVENTS))
        .order_by(AuditEvent.id.desc())
        .limit(1)
    )


def record_event(
    session: Session, output: OutputSeries, kind: str, now: datetime, detail: dict[str, Any]
) -> None:
    """An audit event about an output series: the review gate's story is told in these."""
    session.add(
        AuditEvent(
            at=now,
            kind=kind,
            study_uid=output.study_uid,
            series_uid=output.series_uid,
            job_id=output.job_id,
            detail=detail,
        )
    )


def queue_deliveries(
    session: Session, output_id: int, destinations: Sequence[str], now: datetime
) -> None:
    """One outbox row per destination; rows that already exist are re-armed, and their
    claims cleared, so the send of an earlier version cannot mark them done."""
    for name in destinations:
        delivery = session.scalar(
            select(Delivery).where(
                Delivery.output_series_id == output_id, Delivery.destination == name
            )
        )
        if delivery is None:
            delivery = Delivery(output_series_id=output_id, destination=name, created_at=now)
            session.add(delivery)
        delivery.state = DeliveryState.PENDING
        delivery.attempts = 0
        delivery.next_attempt_at = now
        delivery.last_error = None
        delivery.lease_until = None
        delivery.worker = None
        delivery.claim = None


def _supersede(session: Session, output: OutputSeries, now: datetime) -> None:
    """Records that the decision on the series' earlier version no longer applies: the
    series was written again (new pixels) since."""
    latest = latest_review_event(session, output.series_uid)
    if latest is None or latest.kind not in DECISIONS:
        return
    decided = {"decision": latest.kind.removeprefix("review."), "decided_at": latest.at.isoformat()}
    record_event(session, output, "review.superseded", now, {**decided, **latest.detail})


class Outbox:
    """Releases, or holds for review, one written output series per step."""

    def __init__(
        self, db: Database, clock: Callable[[], datetime], reviewed: Collection[str] = ()
    ) -> None:
        """``reviewed``: the model ids of the routes with ``review: true``."""
        self.db = db
        self.clock = clock
        self.reviewed = frozenset(reviewed)

    def run_once(self) -> bool:
        now = self.clock()
        with self.db.session() as session:
            output = session.scalar(
                select(OutputSeries)
                .where(OutputSeries.state == OutputState.WRITTEN)
                .order_by(OutputSeries.id)
                .limit(1)
            )
            if output is None:
                return False
            model = session.scalar(select(Job.model_id).where(Job.id == output.job_id))
            held = model in self.reviewed
            target = OutputState.AWAITING_REVIEW if held else OutputState.RELEASED
            moved = session.execute(
                update(OutputSeries)
                .where(OutputSeries.id == output.id, OutputSeries.state == OutputState.WRITTEN)
                .values(state=target)
            )
            if moved.rowcount == 0:  # type: ignore[attr-defined]
                return True  # another dispatch process moved it first
            _supersede(session, output, now)
            if held:
                record_event(
                    session, output, "review.awaiting", now, {"instances": output.instance_count}
                )
            else:
                queue_deliveries(session, output.id, output.send_to, now)
            series_uid, destinations = output.series_uid, list(output.send_to)
        if held:
            emit(log, "output.awaiting_review", series_uid=series_uid, destinations=destinations)
        else:
            emit(log, "output.released", series_uid=series_uid, destinations=destinations)
        return True


def mark_delivered(session: Session, output_id: int) -> None:
    """A released series whose every delivery is done is ``delivered``."""
    undelivered = session.scalar(
        select(Delivery.id)
        .where(Delivery.output_series_id == output_id, Delivery.state != DeliveryState.DONE)
        .limit(1)
    )
    if undelivered is None:
        session.execute(
            update(OutputSeries)
            .where(OutputSeries.id == output_id, OutputSeries.state == OutputState.RELEASED)
            .values(state=OutputState.DELIVERED)
        )
