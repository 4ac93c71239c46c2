"""Claiming and releasing work: jobs that write one output series run one after the
other; a process that claimed a job or a delivery and died is told from a living one —
also when another process, or a restarted node in a fresh container, now has its PID."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from storage.database import Database
from storage.models import Job, JobState, Study, StudyState
from storage.queue import claim_job, incarnation, release_abandoned, worker_name

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def db(tmp_path: Path) -> Database:
    database = Database(f"sqlite:///{tmp_path / 'node.db'}")
    with database.session() as session:
        session.add(
            Study(
                study_uid="1.2.3",
                state=StudyState.ROUTED,
                first_received_at=NOW,
                last_received_at=NOW,
                last_calling_ae="X",
            )
        )
    return database


def _running_job(db: Database, worker: str) -> int:
    """A job claimed by ``worker`` with a lease far in the future (only liveness counts)."""
    with db.session() as session:
        job = Job(
            study_id=1,
            model_id="m",
            model_version="1",
            input_series=["1.2.3.4"],
            fingerprint=worker[-64:],
            send_to=[],
            state=JobState.RUNNING,
            attempts=1,
            created_at=NOW,
            updated_at=NOW,
            lease_until=NOW + timedelta(hours=1),
            worker=worker,
        )
        session.add(job)
        session.flush()
        return job.id


def _pending_job(db: Database, model: str) -> int:
    with db.session() as session:
        job = Job(
            study_id=1,
            model_id=model,
            model_version="1",
            input_series=["1.2.3.4"],
            fingerprint=uuid.uuid4().hex,
            send_to=[],
            state=JobState.PENDING,
            attempts=0,
            created_at=NOW,
            updated_at=NOW,
        )
        session.add(job)
        session.flush()
        return job.id


def _claim(db: Database) -> int | None:
    with db.session() as session:
        job = claim_job(session, "w", NOW, timedelta(minutes=5))
        return job.id if job else None


def _end(db: Database, job_id: int, state: JobState) -> None:
    with db.session() as session:
        session.get_one(Job, job_id).state = state


def test_a_study_models_later_job_waits_until_the_earlier_one_has_ended(db: Database) -> None:
    """Both write the same output series (the study grew between them): run at once,
    the partial version could be written after the whole one."""
    first, second, third = (_pending_job(db, "m") for _ in range(3))
    other = _pending_job(db, "other-model")
    assert _claim(db) == first
    assert _claim(db) == other, "another model's job of the study does not wait"
    assert _claim(db) is None, "the second job waits while the first runs"
    _end(db, first, JobState.DONE)
    assert _claim(db) == second
    _end(db, second, JobState.FAILED)
    assert _claim(db) == third, "a failed job holds nothing up"


def _state(db: Database, job_id: int) -> JobState:
    with db.session() as session:
        return session.get_one(Job, job_id).state


def _release(db: Database) -> None:
    with db.session() as session:
        release_abandoned(session, NOW, max_job_attempts=3, max_delivery_attempts=10)


CLAIMER = textwrap.dedent(
    """
    import sys, time
    from datetime import UTC, datetime, timedelta
    from storage.database import Database
    from storage.queue import claim_job, worker_name
    db = Database(sys.argv[1], run_migrations=False)
    with db.session() as session:
        job = claim_job(session, worker_name("synthesize"), datetime.now(UTC), timedelta(hours=1))
        print(job.worker if job else "none", flush=True)
    time.sleep(600)
    """
)


def test_the_job_of_a_worker_killed_with_sigkill_is_released_at_once(
    db: Database, tmp_path: Path
) -> None:
    """A real claim by the product's code in another process, then kill -9."""
    with db.session() as session:
        session.add(
            Job(
                study_id=1,
                model_id="m",
                model_version="1",
                input_series=["1.2.3.4"],
                fingerprint="f",
                send_to=[],
                state=JobState.PENDING,
                attempts=0,
                created_at=NOW,
                updated_at=NOW,
            )
        )
    child = subprocess.Popen(
        [sys.executable, "-c", CLAIMER, f"sqlite:///{tmp_path / 'node.db'}"],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        assert child.stdout is not None
        claimed_by = child.stdout.readline().strip()
        assert claimed_by.split(":")[1].startswith(f"{child.pid}.")
        _release(db)
        assert _state(db, 1) == JobState.RUNNING, "a living worker keeps its job"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    _release(db)
    assert _state(db, 1) == JobState.PENDING


def test_a_dead_predecessor_that_had_our_pid_is_told_from_us(db: Database) -> None:
    """The node as PID 1 of a container is PID 1 again after a restart: the row of the
    dead PID 1 carries another incarnation, and is released, not kept for the lease."""
    mine = worker_name("synthesize")
    host, pid_and_token, thread, stage = mine.split(":")
    pid, _, token = pid_and_token.partition(".")
    assert token == incarnation(os.getpid())
    other = "0" * 8 if token != "0" * 8 else "1" * 8
    predecessor = _running_job(db, f"{host}:{pid}.{other}:{thread}:{stage}")
    ours = _running_job(db, mine)
    _release(db)
    assert _state(db, predecessor) == JobState.PENDING
    assert _state(db, ours) == JobState.RUNNING


def test_a_dead_worker_whose_pid_another_process_now_has_is_released(db: Database) -> None:
    with subprocess.Popen(["sleep", "60"]) as stranger:
        try:
            host = worker_name("x").split(":")[0]
            job = _running_job(db, f"{host}:{stranger.pid}.deadbeef:1:synthesize")
            _release(db)
            assert _state(db, job) == JobState.PENDING
        finally:
            stranger.kill()


def test_rows_named_before_incarnations_keep_working(db: Database) -> None:
    """``host:pid:thread:stage`` from an older node: a PID that is gone is released, our
    own is kept."""
    host = worker_name("x").split(":")[0]
    with subprocess.Popen(["true"]) as gone:
        gone.wait()
    dead = _running_job(db, f"{host}:{gone.pid}:1:synthesize")
    alive = _running_job(db, f"{host}:{os.getpid()}:1:dispatch")
    elsewhere = _running_job(db, f"another-host:{gone.pid}:1:synthesize")
    _release(db)
    assert _state(db, dead) == JobState.PENDING
    assert _state(db, alive) == JobState.RUNNING
    assert _state(db, elsewhere) == JobState.RUNNING, "another host's worker waits for its lease"


def test_a_long_host_name_does_not_cut_the_pid_out_of_the_worker_name(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Kubernetes pod names reach 63 characters; the worker column holds 64."""
    monkeypatch.setattr(socket, "gethostname", lambda: "dicom-node-" + "x" * 52)
    mine = worker_name("synthesize")
    assert len(mine) <= 64
    assert mine.split(":")[1] == f"{os.getpid()}.{incarnation(os.getpid())}"
    job = _running_job(db, mine)
    _release(db)
    assert _state(db, job) == JobState.RUNNING
