"""Work claiming: jobs and deliveries are taken by one worker at a time, under a lease.

On PostgreSQL a claim is ``SELECT … FOR UPDATE SKIP LOCKED``, so workers on several
hosts never take the same row; on SQLite every transaction holds the write lock from
its start (see storage.database), which serialises claims the same way. A worker that
dies leaves its lease behind: the row is handed out again when the lease runs out, or at
once when the worker was a process on this host that no longer exists.
"""

from __future__ import annotations

import os
import socket
import threading
from datetime import datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from storage.models import Delivery, DeliveryState, Job, JobState


def worker_name(stage: str) -> str:
    """``host:pid:thread:stage``, so a restarted node can tell its dead predecessors' rows."""
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}:{stage}"[:64]


def _is_dead_local(worker: str | None) -> bool:
    if not worker:
        return True
    parts = worker.split(":")
    if len(parts) < 2 or parts[0] != socket.gethostname():
        return False
    try:
        pid = int(parts[1])
    except ValueError:
        return True
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def claim_job(session: Session, worker: str, now: datetime, lease: timedelta) -> Job | None:
    job = session.scalars(
        select(Job)
        .where(Job.state == JobState.PENDING)
        .order_by(Job.id)
        .limit(1)
        .with_for_update(skip_locked=True)
    ).first()
    if job is None:
        return None
    job.state = JobState.RUNNING
    job.worker = worker
    job.lease_until = now + lease
    job.attempts += 1
    job.updated_at = now
    return job


def claim_delivery(
    session: Session, worker: str, now: datetime, lease: timedelta
) -> Delivery | None:
    delivery = session.scalars(
        select(Delivery)
        .where(Delivery.state == DeliveryState.PENDING, Delivery.next_attempt_at <= now)
        .order_by(Delivery.next_attempt_at, Delivery.id)
        .limit(1)
        .with_for_update(skip_locked=True)
    ).first()
    if delivery is None:
        return None
    delivery.state = DeliveryState.SENDING
    delivery.worker = worker
    delivery.lease_until = now + lease
    delivery.attempts += 1
    return delivery


def release_abandoned(session: Session, now: datetime, max_job_attempts: int) -> tuple[int, int]:
    """Hands out again the jobs and deliveries whose worker died; returns (jobs, deliveries).

    A job that has already been tried ``max_job_attempts`` times is failed instead, so a
    study that kills the worker (out of memory, say) cannot take the node down forever.
    """
    jobs = 0
    for job in session.scalars(
        select(Job).where(Job.state == JobState.RUNNING).with_for_update(skip_locked=True)
    ):
        if (job.lease_until and job.lease_until < now) or _is_dead_local(job.worker):
            if job.attempts >= max_job_attempts:
                job.state = JobState.FAILED
                job.error = (job.error or "") + f"worker died {job.attempts} times on this job"
            else:
                job.state = JobState.PENDING
            job.worker, job.lease_until, job.updated_at = None, None, now
            jobs += 1
    deliveries = 0
    for delivery in session.scalars(
        select(Delivery)
        .where(Delivery.state == DeliveryState.SENDING)
        .with_for_update(skip_locked=True)
    ):
        if (delivery.lease_until and delivery.lease_until < now) or _is_dead_local(delivery.worker):
            delivery.state = DeliveryState.PENDING
            delivery.worker, delivery.lease_until = None, None
            delivery.next_attempt_at = now
            deliveries += 1
    return jobs, deliveries


def reset_delivery(session: Session, delivery_id: int, now: datetime) -> bool:
    """Operator's retry: a parked or failed delivery goes back to pending, attempts zeroed."""
    result = session.execute(
        update(Delivery)
        .where(
            Delivery.id == delivery_id,
            or_(
                Delivery.state == DeliveryState.PARKED,
                Delivery.state == DeliveryState.PENDING,
                Delivery.state == DeliveryState.DONE,
            ),
        )
        .values(state=DeliveryState.PENDING, attempts=0, next_attempt_at=now, last_error=None)
    )
    return bool(getattr(result, "rowcount", 0))
