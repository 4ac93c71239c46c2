"""Leases on jobs and deliveries: only the claim that holds a row may finish it, a living
worker keeps its claim however long it works, and a delivery whose dispatcher keeps dying
is parked with the reason. On SQLite and on PostgreSQL."""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import sends_to, write_config
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE, evt
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]
from sqlalchemy import select

from dicom_node.cli.main import main as cli
from dicom_node.config import Config, load_config
from dicom_node.dispatch.dispatcher import Dispatcher
from dicom_node.dispatch.outbox import queue_deliveries
from dicom_node.route.scheduler import Scheduler
from dicom_node.runtime.node import Node
from dicom_node.synthesize.job import Synthesizer
from factories import StudySpec, axial_series, ramp_pixels, write_series
from inference.registry import Registry
from peers import free_port, stored_ok, storescu, wait_until
from storage.database import Database
from storage.models import (
    Delivery,
    DeliveryState,
    Job,
    JobState,
    OutputSeries,
    OutputState,
    Study,
    StudyState,
)
from storage.spool import Spool, output_instance_key, output_series_key

pytestmark = pytest.mark.integration

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
SUCCESS, OUT_OF_RESOURCES = 0x0000, 0xA700


class Clock:
    """Injected time: a lease runs out when the test says so."""

    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Destination:
    """A pynetdicom storage SCP that records what it stored; ``during_first_store`` runs
    inside the first C-STORE, while the sender waits for the answer, and gives the status
    that store is answered with."""

    port: int = field(default_factory=free_port)
    received: list[str] = field(default_factory=list)
    delay_s: float = 0.0
    during_first_store: Callable[[], int] | None = None

    def handle(self, event: Any) -> int:
        hook, self.during_first_store = self.during_first_store, None
        status = hook() if hook is not None else SUCCESS
        time.sleep(self.delay_s)
        if status == SUCCESS:
            self.received.append(str(event.request.AffectedSOPInstanceUID))
        return status


@pytest.fixture
def destination() -> Iterator[Destination]:
    dest = Destination()
    ae = AE(ae_title="PACS")
    ae.add_supported_context(CTImageStorage)
    server = ae.start_server(
        ("127.0.0.1", dest.port), block=False, evt_handlers=[(evt.EVT_C_STORE, dest.handle)]
    )
    yield dest
    server.shutdown()


def _config(folder: Path, database_url: str, port: int, **sections: Any) -> Config:
    overrides = {"storage": {"database_url": database_url}, **sends_to(port, "PACS"), **sections}
    return load_config(write_config(folder, overrides))


def _version(series_uid: str, slices: int) -> list[Dataset]:
    """One run's output: a CT series of ``slices`` instances with their own SOP UIDs."""
    pixels = ramp_pixels(slices=slices, rows=16, cols=16, dtype=np.int16)
    return axial_series(StudySpec(), pixels, modality="CT", series_uid=series_uid)


def _spool_version(spool: Spool, datasets: list[Dataset]) -> None:
    for index, ds in enumerate(datasets):
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        key = output_instance_key(output_series_key(str(ds.SeriesInstanceUID)), index)
        spool.write(key, buffer.getvalue())


def _job(session: Any, state: JobState) -> Job:
    study = Study(
        study_uid=generate_uid(),
        state=StudyState.ROUTED,
        first_received_at=NOW,
        last_received_at=NOW,
        last_calling_ae="MODALITY",
    )
    session.add(study)
    session.flush()
    job = Job(
        study_id=study.id,
        model_id="mr-t1-to-ct",
        model_version="1.0.0",
        input_series=[generate_uid()],
        fingerprint=generate_uid()[-64:],
        send_to=["pacs"],
        state=state,
        attempts=0,
        created_at=NOW,
        updated_at=NOW,
    )
    session.add(job)
    session.flush()
    return job


def _delivered_output(db: Database, spool: Spool, datasets: list[Dataset]) -> int:
    """A synthesized series (rows and spool files) with its delivery to "pacs" due now;
    returns the delivery's id."""
    _spool_version(spool, datasets)
    series_uid = str(datasets[0].SeriesInstanceUID)
    with db.session() as session:
        job = _job(session, JobState.DONE)
        out = OutputSeries(
            job_id=job.id,
            study_uid=str(datasets[0].StudyInstanceUID),
            series_uid=series_uid,
            sop_class_uid=str(datasets[0].SOPClassUID),
            spool_key=output_series_key(series_uid),
            instance_count=len(datasets),
            model_key="mr-t1-to-ct@1.0.0",
            provenance={},
            created_at=NOW,
            state=OutputState.RELEASED,
            send_to=["pacs"],
        )
        session.add(out)
        session.flush()
        delivery = Delivery(
            output_series_id=out.id,
            destination="pacs",
            state=DeliveryState.PENDING,
            attempts=0,
            next_attempt_at=NOW,
            created_at=NOW,
        )
        session.add(delivery)
        session.flush()
        return delivery.id


def _delivery(db: Database, delivery_id: int) -> Delivery:
    with db.session() as session:
        return session.get_one(Delivery, delivery_id)


def test_a_delivery_a_rerun_rearms_while_it_is_sent_is_sent_again_whole(
    tmp_path: Path, database_url: str, destination: Destination
) -> None:
    """The study gained slices after delivery: the re-run's output (more instances, same
    series) re-arms the delivery while a dispatcher is still sending the old copy. That
    dispatcher must not mark it done: the destination would keep the short series."""
    config = _config(tmp_path, database_url, destination.port)
    db, spool, clock = Database(config.database_url), Spool(config.spool_dir), Clock()
    series_uid = generate_uid()
    short, full = _version(series_uid, 3), _version(series_uid, 5)
    delivery_id = _delivered_output(db, spool, short)

    def rerun() -> int:
        _spool_version(spool, full)
        with db.session() as session:
            out = session.scalars(select(OutputSeries)).one()
            out.instance_count = len(full)
            queue_deliveries(session, out.id, ["pacs"], clock())
        return SUCCESS

    destination.during_first_store = rerun
    dispatcher = Dispatcher(config, db, spool, clock)
    assert dispatcher.run_once()
    assert _delivery(db, delivery_id).state == DeliveryState.PENDING, "the old copy's send"
    assert dispatcher.run_once(), "the re-armed delivery is due"
    assert _delivery(db, delivery_id).state == DeliveryState.DONE
    assert destination.received[-5:] == [str(ds.SOPInstanceUID) for ds in full]


def test_a_dispatcher_whose_lease_ran_out_cannot_finish_what_another_delivered(
    tmp_path: Path, database_url: str, destination: Destination
) -> None:
    """Dispatcher one hangs past its lease; the scheduler hands the delivery to dispatcher
    two, which delivers it; then one's send fails. One's failure must not turn two's
    delivery back into a retry."""
    config = _config(tmp_path, database_url, destination.port)
    db, spool, clock = Database(config.database_url), Spool(config.spool_dir), Clock()
    series = _version(generate_uid(), 3)
    delivery_id = _delivered_output(db, spool, series)
    one, two = (Dispatcher(config, db, spool, clock) for _ in range(2))
    scheduler = Scheduler(config, db, spool, {}, clock)

    def lease_runs_out_and_two_delivers() -> int:
        clock.now += timedelta(seconds=config.scheduler.dispatch_lease_seconds + 1)
        scheduler.run_once()
        assert two.run_once()
        return OUT_OF_RESOURCES

    destination.during_first_store = lease_runs_out_and_two_delivers
    assert one.run_once()
    delivery = _delivery(db, delivery_id)
    assert (delivery.state, delivery.last_error, delivery.attempts) == (
        DeliveryState.DONE,
        None,
        2,
    )
    assert destination.received == [str(ds.SOPInstanceUID) for ds in series]


def test_a_worker_whose_lease_ran_out_cannot_finish_the_job_another_worker_took(
    tmp_path: Path, database_url: str
) -> None:
    """Both workers run in one thread of one process, so they bear the same worker name:
    only the claim itself tells them apart."""
    config = _config(tmp_path, database_url, free_port())
    db, spool, clock = Database(config.database_url), Spool(config.spool_dir), Clock()
    with db.session() as session:
        job_id = _job(session, JobState.PENDING).id
    one, two = (Synthesizer(config, db, spool, Registry(), clock, None) for _ in range(2))
    mine = one._claim()
    assert mine is not None
    clock.now += timedelta(seconds=config.scheduler.job_lease_seconds + 1)
    Scheduler(config, db, spool, {}, clock).run_once()
    theirs = two._claim()
    assert theirs is not None and theirs.attempts == 2

    one._fail(mine, "worker one gave up", retry=True)
    with db.session() as session:
        job = session.get_one(Job, job_id)
        assert (job.state, job.error, job.lease_until) == (
            JobState.RUNNING,
            None,
            clock.now + timedelta(seconds=config.scheduler.job_lease_seconds),
        )
    two._fail(theirs, "model gone", retry=False)
    with db.session() as session:
        job = session.get_one(Job, job_id)
        assert (job.state, job.error) == (JobState.FAILED, "model gone")


def test_a_delivery_whose_dispatcher_died_too_often_is_parked_with_the_reason(
    tmp_path: Path, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(tmp_path, database_url, free_port(), dispatch={"max_attempts": 2})
    db, spool, clock = Database(config.database_url), Spool(config.spool_dir), Clock()
    delivery_id = _delivered_output(db, spool, _version(generate_uid(), 1))
    with db.session() as session:
        delivery = session.get_one(Delivery, delivery_id)
        delivery.state, delivery.attempts = DeliveryState.SENDING, 2
        delivery.worker, delivery.lease_until = "another-host:1:1:dispatch", NOW
    clock.now += timedelta(seconds=1)
    Scheduler(config, db, spool, {}, clock).run_once()
    delivery = _delivery(db, delivery_id)
    assert delivery.state == DeliveryState.PARKED
    assert delivery.last_error == "dispatcher died or hung 2 times on this delivery"

    assert cli(["--config", str(tmp_path / "config.yaml"), "outbox", "list"]) == 0
    listed = capsys.readouterr().out
    assert "\tparked\tpacs\t2\t" in listed
    assert listed.rstrip().endswith("dispatcher died or hung 2 times on this delivery")


def test_a_living_workers_job_and_delivery_are_never_handed_out_again(
    tmp_path: Path,
    node_factory: Callable[..., Node],
    models_dir: Path,
    destination: Destination,
) -> None:
    """Leases far shorter than the work: two workers and two dispatchers wait for any
    row the scheduler (ticking every 0.1 s) hands out again. The job runs and the
    delivery is sent exactly once."""
    destination.delay_s = 0.05
    node = node_factory(
        {
            **sends_to(destination.port, "PACS"),
            "inference": {"providers": ["CPUExecutionProvider"], "workers": 2},
            "dispatch": {"workers": 2},
            "scheduler": {
                "poll_seconds": 0.1,
                "job_lease_seconds": 0.3,
                "dispatch_lease_seconds": 0.3,
            },
        }
    )
    assert node.address is not None
    paths = write_series(axial_series(StudySpec(), ramp_pixels(slices=24)), tmp_path / "in")
    assert stored_ok(storescu("127.0.0.1", node.address[1], "DICOMNODE", paths)) == 24

    def state() -> tuple[Any, ...]:
        with node.db.session() as session:
            job = session.scalars(select(Job)).one_or_none()
            delivery = session.scalars(select(Delivery)).one_or_none()
            return (job and job.state, job and job.attempts, delivery and delivery.state)

    running = wait_until(lambda: state()[0] == JobState.RUNNING and time.monotonic(), 60)
    done = wait_until(lambda: state()[0] == JobState.DONE and time.monotonic(), 60)
    assert done - running > 0.6, "the job outlasted its lease twice"
    wait_until(lambda: state()[2] == DeliveryState.DONE, 60, what="the delivery")
    with node.db.session() as session:
        job = session.scalars(select(Job)).one()
        delivery = session.scalars(select(Delivery)).one()
        assert (job.attempts, delivery.attempts) == (1, 1)
    assert len(destination.received) == len(set(destination.received)) == 24
