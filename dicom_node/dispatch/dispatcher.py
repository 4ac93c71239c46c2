"""Dispatch: the dispatcher. Each delivery sends one whole output series to one
destination (its type's sender, ``destinations``); the outbox queued it.

A delivery succeeds only when the destination answered every instance with a success
or warning status (PS3.4 B.2.3: warnings mean it stored the instance). Otherwise it is
retried with exponential backoff up to a cap, and parked with the reason after
``dispatch.max_attempts``; an operator can retry a parked delivery. Resending a series
is harmless: its UIDs are deterministic, so the destination replaces, never duplicates.

A dispatcher renews its lease while it sends (storage.heartbeat) and writes the outcome
only while its claim still holds the delivery: a re-run that re-armed it meanwhile (the
series changed), or a scheduler that handed it out again, wins over the earlier send.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from dicom_node.config import Config
from dicom_node.dispatch.destinations.base import DeliveryError
from dicom_node.dispatch.destinations.registry import sender_for
from dicom_node.dispatch.outbox import mark_delivered
from dicom_node.net.ae import AssociationError
from dicom_node.obs.logs import emit, get_logger
from storage.database import Database
from storage.heartbeat import Heartbeat
from storage.models import AuditEvent, Delivery, DeliveryState
from storage.queue import claim_delivery, finish, worker_name
from storage.spool import Spool, output_instance_key

log = get_logger("dispatch")


@dataclass(frozen=True)
class ClaimedDelivery:
    id: int
    destination: str
    series_uid: str
    study_uid: str
    sop_class_uid: str
    spool_key: str
    instances: int
    attempts: int
    claim: str
    output_id: int


def backoff(attempts: int, initial_s: float, cap_s: float) -> timedelta:
    """initial · 2^(attempts-1), never more than the cap."""
    return timedelta(seconds=min(cap_s, initial_s * 2 ** max(0, attempts - 1)))


class Dispatcher:
    """The dispatch stage; one instance per dispatcher thread."""

    def __init__(
        self, config: Config, db: Database, spool: Spool, clock: Callable[[], datetime]
    ) -> None:
        self.config = config
        self.db = db
        self.spool = spool
        self.clock = clock
        self.name = worker_name("dispatch")

    @property
    def lease(self) -> timedelta:
        return timedelta(seconds=self.config.scheduler.dispatch_lease_seconds)

    def run_once(self) -> bool:
        delivery = self._claim()
        if delivery is None:
            return False
        with Heartbeat(self.db, Delivery, delivery.id, delivery.claim, self.lease, self.clock):
            self._send(delivery)
        return True

    def _send(self, delivery: ClaimedDelivery) -> None:
        """Sends the whole series and records the outcome."""
        try:
            destination = self.config.destination(delivery.destination)
        except KeyError:
            self._finish(
                delivery, f"destination {delivery.destination} is no longer configured", park=True
            )
            return
        paths = [
            self.spool.path(output_instance_key(delivery.spool_key, i))
            for i in range(delivery.instances)
        ]
        try:
            sender_for(destination)(destination, paths, delivery.sop_class_uid, self.config)
        except (DeliveryError, AssociationError, OSError) as exc:
            self._finish(delivery, str(exc), park=False)
        except Exception as exc:  # the stage's outer loop: record, retry later, go on
            self._finish(delivery, f"{type(exc).__name__}: {exc}", park=False)
        else:
            self._finish(delivery, None, park=False)

    def _claim(self) -> ClaimedDelivery | None:
        with self.db.session() as session:
            d = claim_delivery(session, self.name, self.clock(), self.lease)
            if d is None:
                return None
            out = d.output_series
            return ClaimedDelivery(
                d.id,
                d.destination,
                out.series_uid,
                out.study_uid,
                out.sop_class_uid,
                out.spool_key,
                out.instance_count,
                d.attempts,
                str(d.claim),
                out.id,
            )

    def _finish(self, claimed: ClaimedDelivery, error: str | None, park: bool) -> None:
        now = self.clock()
        settings = self.config.dispatch
        outcome: dict[str, object]
        if error is None:
            outcome = {"state": DeliveryState.DONE, "delivered_at": now, "last_error": None}
            kind = "delivery.done"
        elif park or claimed.attempts >= settings.max_attempts:
            outcome = {"state": DeliveryState.PARKED, "last_error": error}
            kind = "delivery.parked"
        else:
            wait = backoff(claimed.attempts, settings.backoff_initial_s, settings.backoff_max_s)
            outcome = {
                "state": DeliveryState.PENDING,
                "last_error": error,
                "next_attempt_at": now + wait,
            }
            kind = "delivery.retry"
        with self.db.session() as session:
            if not finish(session, Delivery, claimed.id, claimed.claim, **outcome):
                kind = "delivery.lease_lost"  # re-armed or handed out again: theirs now
            else:
                if error is None:
                    mark_delivered(session, claimed.output_id)
                session.add(
                    AuditEvent(
                        at=now,
                        kind=kind,
                        study_uid=claimed.study_uid,
                        series_uid=claimed.series_uid,
                        detail={
                            "destination": claimed.destination,
                            "attempt": claimed.attempts,
                            "error": error,
                        },
                    )
                )
        emit(
            log,
            kind,
            20 if kind == "delivery.done" else 30,
            delivery_id=claimed.id,
            destination=claimed.destination,
            series_uid=claimed.series_uid,
            instances=claimed.instances,
            attempt=claimed.attempts,
            error=error,
        )
