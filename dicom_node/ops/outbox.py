"""The outbox as an operator sees it: every delivery, and sending one again."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from storage.models import Delivery, OutputSeries, OutputState
from storage.queue import reset_delivery


def list_deliveries(session: Session) -> list[dict[str, Any]]:
    """Every delivery with its output series, oldest first."""
    rows = session.execute(
        select(Delivery, OutputSeries).join(OutputSeries).order_by(Delivery.id)
    ).all()
    return [
        {
            "id": d.id,
            "destination": d.destination,
            "state": d.state.value,
            "attempts": d.attempts,
            "series_uid": out.series_uid,
            "series_state": out.state.value,
            "instances": out.instance_count,
            "model": out.model_key,
            "next_attempt_at": d.next_attempt_at.isoformat(),
            "last_error": d.last_error,
        }
        for d, out in rows
    ]


def retry(session: Session, delivery_id: int, now: datetime) -> bool:
    """Queues a parked, pending or done delivery again (attempts zeroed); its series,
    if it was delivered, is released again until this send is done. False when there is
    no such delivery or it is being sent."""
    if not reset_delivery(session, delivery_id, now):
        return False
    output_id = select(Delivery.output_series_id).where(Delivery.id == delivery_id)
    session.execute(
        update(OutputSeries)
        .where(OutputSeries.id.in_(output_id), OutputSeries.state == OutputState.DELIVERED)
        .values(state=OutputState.RELEASED)
    )
    return True
