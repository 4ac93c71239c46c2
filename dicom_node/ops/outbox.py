"""The outbox as an operator sees it: every delivery, sending one again, and sending a
whole output series again."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from dicom_node.dispatch.outbox import queue_deliveries, record_event
from dicom_node.ops.review import decision
from storage.models import Delivery, DeliveryState, OutputSeries, OutputState
from storage.queue import reset_delivery

RESENDABLE = (OutputState.RELEASED, OutputState.DELIVERED)
"""Only a series cleared for sending is sent again: a written one is released (and sent)
by the outbox anyway, and one awaiting review or rejected must not leave the node."""


class ResendRefused(ValueError):
    """The series cannot be sent again; the message says why."""


def list_deliveries(session: Session, state: DeliveryState | None = None) -> list[dict[str, Any]]:
    """Every delivery (or those in ``state``) with its output series and the review
    decision on it, oldest first."""
    query = select(Delivery, OutputSeries).join(OutputSeries).order_by(Delivery.id)
    if state is not None:
        query = query.where(Delivery.state == state)
    rows = session.execute(query).all()
    return [
        {
            "id": d.id,
            "destination": d.destination,
            "state": d.state.value,
            "attempts": d.attempts,
            "series_uid": out.series_uid,
            "series_state": out.state.value,
            "review": decision(session, out.series_uid),
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


def resend(
    session: Session,
    series_uid: str,
    now: datetime,
    destinations: Collection[str],
    to: str | None = None,
    by: str = "",
) -> list[str]:
    """Queues the output series ``series_uid`` again for the destinations its route named,
    or for ``to`` alone (any of the configured ``destinations``); returns those queued.
    An ``outbox.resend`` audit event names who asked (``by``) and where it goes.

    Their deliveries are re-armed as a re-run re-arms them (attempts zeroed; a send in
    flight loses its claim, so it cannot mark the new one done), and a delivered series
    is released again until they are done. The same UIDs go out again, so a destination
    replaces what it holds, or keeps its first copy. Raises :class:`ResendRefused` for
    an unknown series, one not released, or a destination not configured.
    """
    output = session.scalar(select(OutputSeries).where(OutputSeries.series_uid == series_uid))
    if output is None:
        raise ResendRefused(f"no output series {series_uid}")
    if output.state not in RESENDABLE:
        raise ResendRefused(
            f"output series {series_uid} is {output.state.value}: only a released or "
            "delivered series is sent again"
        )
    targets = [to] if to is not None else list(output.send_to)
    unknown = [name for name in targets if name not in destinations]
    if unknown:
        raise ResendRefused(f"no destination named {', '.join(unknown)} in the configuration")
    queue_deliveries(session, output.id, targets, now)
    output.state = OutputState.RELEASED
    record_event(session, output, "outbox.resend", now, {"by": by, "to": targets})
    return targets
