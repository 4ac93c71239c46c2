"""Work claiming: jobs and deliveries are taken by one worker at a time, under a lease.

Each claim carries a fresh token. Renewing the lease and finishing the row are updates
conditioned on that token (:func:`renew`, :func:`finish`), so a worker whose row was
handed out again — its lease ran out, or a re-run re-armed the delivery — changes
nothing: two threads of one process bear the same worker name, their tokens differ.

On PostgreSQL a claim is ``SELECT … FOR UPDATE SKIP LOCKED``, so workers on several
hosts never take the same row; on SQLite every transaction holds the write lock from
its start (see storage.database), which serialises claims the same way. A worker that
dies leaves its lease behind: the row is handed out again when the lease runs out, or at
once when the worker was a process on this host that no longer exists (a process that
now holds the same PID is told apart by its start time).
"""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import exists, or_, select, update
from sqlalchemy.orm import Session, aliased

from storage.models import Delivery, DeliveryState, Job, JobState, OutputSeries, OutputState


def worker_name(stage: str) -> str:
    """``host:pid.incarnation:thread:stage``, so a restarted node can tell its dead
    predecessors' rows, even one that had the same PID (see :func:`incarnation`)."""
    pid = os.getpid()
    return f"{_host_id()}:{pid}.{incarnation(pid) or ''}:{threading.get_ident()}:{stage}"[:64]


def _host_id() -> str:
    """The host name, or a digest of it when it is long: the name is cut at 64 characters,
    and a cut through the PID made a living worker's rows look dead."""
    host = socket.gethostname()
    return host if len(host) <= 32 else "h-" + hashlib.sha256(host.encode()).hexdigest()[:16]


def incarnation(pid: int) -> str | None:
    """Tells apart two processes that had the same PID on this host: a digest of the boot
    and of the process' start time (``/proc/PID/stat``, field 22); None where there is no
    such process, or no ``/proc``.

    A PID alone does not name a process for long. A node that is PID 1 of its container
    gets PID 1 again when the container restarts, and on a busy host a dead node's PID
    is soon another program's: either way the dead node's rows looked alive, and its jobs
    and deliveries waited out their whole lease (15 and 30 minutes) after a crash.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None
    # the command name, field 2, is in parentheses and may hold spaces and parentheses
    started = stat.rsplit(")", 1)[-1].split()[19]
    return hashlib.sha256(f"{boot}/{started}".encode()).hexdigest()[:8]


def _is_dead_local(worker: str | None) -> bool:
    if not worker:
        return True
    parts = worker.split(":")
    if len(parts) < 2 or parts[0] != _host_id():
        return False
    pid_text, _, token = parts[1].partition(".")
    try:
        pid = int(pid_text)
    except ValueError:
        return True
    if token and incarnation(os.getpid()) is not None:
        # the process that claimed the row is gone, whoever holds its PID now
        return incarnation(pid) != token
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


Claimed = type[Job] | type[Delivery]


def new_claim() -> str:
    """A claim's token: unique to one claim of one row."""
    return uuid.uuid4().hex


def renew(session: Session, table: Claimed, row_id: int, claim: str, until: datetime) -> bool:
    """Extends the lease of a row this claim still holds; False when it no longer does."""
    result = session.execute(
        update(table).where(table.id == row_id, table.claim == claim).values(lease_until=until)
    )
    return bool(getattr(result, "rowcount", 0))


def finish(session: Session, table: Claimed, row_id: int, claim: str, **values: Any) -> bool:
    """Writes a claimed row's outcome (``values``) and ends the claim, only while this
    claim holds the row; False, and nothing written, when it no longer does."""
    result = session.execute(
        update(table)
        .where(table.id == row_id, table.claim == claim)
        .values(claim=None, worker=None, lease_until=None, **values)
    )
    return bool(getattr(result, "rowcount", 0))


def claim_job(session: Session, worker: str, now: datetime, lease: timedelta) -> Job | None:
    """The oldest pending job that no older unfinished job of the same study and model
    comes before, claimed for ``worker``. Jobs of one study and model write the same
    output series when its inputs grew (same series UID, new instances), so they run one
    after the other, in the order the study grew: two workers never write one series at
    once, and the last version written is the whole study's."""
    earlier = aliased(Job)
    job = session.scalars(
        select(Job)
        .where(
            Job.state == JobState.PENDING,
            ~exists().where(
                earlier.study_id == Job.study_id,
                earlier.model_id == Job.model_id,
                earlier.id < Job.id,
                earlier.state.in_((JobState.PENDING, JobState.RUNNING)),
            ),
        )
        .order_by(Job.id)
        .limit(1)
        .with_for_update(skip_locked=True)
    ).first()
    if job is None:
        return None
    job.state = JobState.RUNNING
    job.worker = worker
    job.claim = new_claim()
    job.lease_until = now + lease
    job.attempts += 1
    job.updated_at = now
    return job


def claim_delivery(
    session: Session, worker: str, now: datetime, lease: timedelta
) -> Delivery | None:
    """The next due delivery of a released series (one written again waits for the
    outbox to re-arm its deliveries), claimed for ``worker``."""
    sendable = select(OutputSeries.id).where(
        OutputSeries.state.in_((OutputState.RELEASED, OutputState.DELIVERED))
    )
    delivery = session.scalars(
        select(Delivery)
        .where(
            Delivery.state == DeliveryState.PENDING,
            Delivery.next_attempt_at <= now,
            Delivery.output_series_id.in_(sendable),
        )
        .order_by(Delivery.next_attempt_at, Delivery.id)
        .limit(1)
        .with_for_update(skip_locked=True)
    ).first()
    if delivery is None:
        return None
    delivery.state = DeliveryState.SENDING
    delivery.worker = worker
    delivery.claim = new_claim()
    delivery.lease_until = now + lease
    delivery.attempts += 1
    return delivery


def release_abandoned(
    session: Session, now: datetime, max_job_attempts: int, max_delivery_attempts: int
) -> tuple[int, int]:
    """Hands out again the jobs and deliveries whose worker died; returns (jobs, deliveries).

    A job that has already been tried ``max_job_attempts`` times is failed instead, so a
    study that kills the worker (out of memory, say) cannot take the node down forever;
    a delivery tried ``max_delivery_attempts`` times is parked, with the reason.
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
            job.worker, job.claim, job.lease_until, job.updated_at = None, None, None, now
            jobs += 1
    deliveries = 0
    for delivery in session.scalars(
        select(Delivery)
        .where(Delivery.state == DeliveryState.SENDING)
        .with_for_update(skip_locked=True)
    ):
        if (delivery.lease_until and delivery.lease_until < now) or _is_dead_local(delivery.worker):
            if delivery.attempts >= max_delivery_attempts:
                delivery.state = DeliveryState.PARKED
                delivery.last_error = (
                    f"dispatcher died or hung {delivery.attempts} times on this delivery"
                )
            else:
                delivery.state = DeliveryState.PENDING
            delivery.worker, delivery.claim, delivery.lease_until = None, None, None
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
