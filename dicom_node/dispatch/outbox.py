"""The outbox: written output series are released and their deliveries queued.

The synthesis job only writes a series (state ``written``, with the destinations its
route named); this step, in the dispatch stage, moves it to ``released`` and queues one
delivery per destination in the same transaction. No route has a review gate yet, so a
written series is released as it is; the gate, when it comes, will hold it in
``awaiting_review`` instead. A re-run of the job writes the series again (``written``),
and releasing it re-arms its deliveries: the destination gets the new version.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from dicom_node.obs.logs import emit, get_logger
from storage.database import Database
from storage.models import Delivery, DeliveryState, OutputSeries, OutputState

log = get_logger("dispatch")


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


class Outbox:
    """Releases one written output series per step and queues its deliveries."""

    def __init__(self, db: Database, clock: Callable[[], datetime]) -> None:
        self.db = db
        self.clock = clock

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
            released = session.execute(
                update(OutputSeries)
                .where(OutputSeries.id == output.id, OutputSeries.state == OutputState.WRITTEN)
                .values(state=OutputState.RELEASED)
            )
            if released.rowcount == 0:  # type: ignore[attr-defined]
                return True  # another dispatch process released it first
            queue_deliveries(session, output.id, output.send_to, now)
            series_uid, destinations = output.series_uid, list(output.send_to)
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
