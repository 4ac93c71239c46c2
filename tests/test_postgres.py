"""The same storage code on PostgreSQL: schema, race-free indexing, SKIP LOCKED claims,
and the whole node path."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from conftest import sends_to
from sqlalchemy import func, select, text

from dicom_node.runtime.node import Node
from factories import StudySpec, axial_series, ramp_pixels, write_series
from peers import PostgresServer, StoreSCP, stored_ok, storescu, wait_until
from storage.database import Database
from storage.instances import ReceivedInstance, record_instance
from storage.models import Base, Delivery, DeliveryState, Instance, Job, JobState, Series, Study
from storage.queue import claim_job

pytestmark = pytest.mark.integration


def test_migrations_build_exactly_the_models_schema_on_postgres(
    postgres_database: Database,
) -> None:
    with postgres_database.engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
        assert conn.execute(text("SELECT version_num FROM alembic_version")).all() == [("0005",)]


def _instance(study: str, series: str, sop: str) -> ReceivedInstance:
    return ReceivedInstance(
        study,
        series,
        sop,
        "1.2.840.10008.5.1.4.1.1.4",
        "1.2.840.10008.1.2.1",
        "MR",
        f"k/{sop}",
        10,
        "PACS",
        datetime.now(UTC),
    )


def test_concurrent_associations_index_one_new_study_without_conflict(
    postgres_database: Database,
) -> None:
    errors: list[BaseException] = []

    def send(thread: int) -> None:
        try:
            for i in range(25):
                with postgres_database.connection() as conn:
                    record_instance(conn, _instance("1.2.3", "1.2.3.4", f"1.2.3.4.{thread}.{i}"))
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=send, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with postgres_database.session() as session:
        assert session.scalar(select(func.count(Study.id))) == 1
        assert session.scalar(select(func.count(Series.id))) == 1
        assert session.scalar(select(func.count(Instance.id))) == 200


def _pending_jobs(database: Database, models: list[str]) -> None:
    """One pending job per entry of ``models``, all of one study."""
    now = datetime.now(UTC)
    with database.connection() as conn:
        record_instance(conn, _instance("9.8.7", "9.8.7.6", "9.8.7.6.5"))
    with database.session() as session:
        study = session.scalar(select(Study))
        assert study is not None
        for n, model in enumerate(models):
            session.add(
                Job(
                    study_id=study.id,
                    model_id=model,
                    model_version="1",
                    input_series=["9.8.7.6"],
                    fingerprint=f"{n:064d}",
                    send_to=[],
                    state=JobState.PENDING,
                    attempts=0,
                    created_at=now,
                    updated_at=now,
                )
            )


def _claim_all(database: Database, workers: int) -> list[int]:
    """What ``workers`` threads claim, each until nothing is left to claim."""
    claimed: list[int] = []
    lock = threading.Lock()

    def work(name: str) -> None:
        while True:
            with database.session() as session:
                job = claim_job(session, name, datetime.now(UTC), timedelta(minutes=5))
                if job is None:
                    return
                with lock:
                    claimed.append(job.id)

    threads = [threading.Thread(target=work, args=(f"w{i}",)) for i in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return claimed


def test_skip_locked_hands_each_job_to_exactly_one_worker(postgres_database: Database) -> None:
    _pending_jobs(postgres_database, [f"m{n}" for n in range(40)])
    claimed = _claim_all(postgres_database, 6)
    assert sorted(claimed) == sorted(set(claimed)) and len(claimed) == 40


def test_racing_workers_run_one_study_and_models_jobs_one_at_a_time(
    postgres_database: Database,
) -> None:
    _pending_jobs(postgres_database, ["m"] * 10 + ["other"])
    with postgres_database.session() as session:
        ids = {j.model_id: j.id for j in session.scalars(select(Job).order_by(Job.id.desc()))}
    assert sorted(_claim_all(postgres_database, 6)) == [ids["m"], ids["other"]]


def test_node_on_postgres_synthesizes_and_delivers(
    tmp_path: Path,
    postgres: PostgresServer,
    postgres_database: Database,
    node_factory: Callable[..., Node],
    models_dir: Path,
) -> None:
    destination = StoreSCP(tmp_path / "pacs").start()
    try:
        node = node_factory(
            {
                "storage": {"database_url": postgres.url},
                **sends_to(destination.port, ae_title=destination.aet),
            }
        )
        assert node.address is not None
        paths = write_series(axial_series(StudySpec(), ramp_pixels(slices=4)), tmp_path / "in")
        assert stored_ok(storescu("127.0.0.1", node.address[1], "DICOMNODE", paths)) == 4

        def delivered() -> Any:
            with postgres_database.session() as session:
                return session.scalar(select(Delivery).where(Delivery.state == DeliveryState.DONE))

        wait_until(delivered, 60, what="the delivery on PostgreSQL")
        assert len(list(destination.folder.glob("CT*"))) == 4
    finally:
        destination.stop()
