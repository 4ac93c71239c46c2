"""Assembly and scheduling with an injected clock: when a study is stable, and what routing
a stable study does (once; again after a re-open; never blocking on a failure)."""

from __future__ import annotations

import copy
import io
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from dicom_node.config import Config
from dicom_node.route import scheduler as scheduler_module
from dicom_node.route.assembly import stable_studies, study_series
from dicom_node.route.scheduler import Scheduler
from factories import StudySpec, axial_series, ramp_pixels
from onnx_models import linear_card
from storage.database import Database
from storage.instances import ReceivedInstance, record_instance
from storage.models import AuditEvent, Job, Study, StudyState
from storage.spool import Spool, instance_key

T0 = datetime(2026, 3, 1, 8, 0, 0, tzinfo=UTC)
STABLE = 10.0
PACS = {"name": "pacs", "ae_title": "ORTHANC", "host": "127.0.0.1", "port": 4242}


@dataclass
class Clock:
    now: datetime = T0

    def __call__(self) -> datetime:
        return self.now

    def at(self, seconds: float) -> Clock:
        self.now = T0 + timedelta(seconds=seconds)
        return self


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database("sqlite:///" + str(tmp_path / "x.db"))
    yield database
    database.dispose()


@pytest.fixture
def spool(tmp_path: Path) -> Spool:
    return Spool(tmp_path / "spool")


def _bytes(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _receive(
    db: Database,
    spool: Spool,
    ds: Dataset,
    seconds: float,
    calling_ae: str = "ORTHANC",
    data: bytes | None = None,
) -> None:
    """What the receive stage does: spool the file, then index it at ``T0 + seconds``."""
    key = instance_key(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
    size = spool.write(key, data if data is not None else _bytes(ds))
    with db.session() as session:
        record_instance(
            session,
            ReceivedInstance(
                study_uid=ds.StudyInstanceUID,
                series_uid=ds.SeriesInstanceUID,
                sop_instance_uid=ds.SOPInstanceUID,
                sop_class_uid=ds.SOPClassUID,
                transfer_syntax_uid=str(ds.file_meta.TransferSyntaxUID),
                modality=ds.Modality,
                spool_key=key,
                size_bytes=size,
                calling_ae=calling_ae,
                received_at=T0 + timedelta(seconds=seconds),
            ),
        )


def _t1(study: StudySpec, slices: int = 3, **kwargs: Any) -> list[Dataset]:
    return axial_series(study, ramp_pixels(slices=slices, rows=4, cols=4), **kwargs)


def _stable_uids(db: Database, seconds: float, stable: float = STABLE) -> list[str]:
    with db.session() as session:
        return [
            s.study_uid for s in stable_studies(session, T0 + timedelta(seconds=seconds), stable)
        ]


def _study(db: Database, uid: str) -> Study:
    with db.session() as session:
        study = session.scalar(select(Study).where(Study.study_uid == uid))
        assert study is not None
        return study


def _jobs(db: Database) -> list[Job]:
    with db.session() as session:
        return list(session.scalars(select(Job).order_by(Job.id)))


def _scheduler(
    db: Database, spool: Spool, tmp_path: Path, send_to: list[str] | None = None
) -> tuple[Scheduler, Clock]:
    config = Config.model_validate(
        {
            "node": {"stable_seconds": STABLE},
            "destinations": [PACS],
            "routes": [{"model": "mr-t1-to-ct", "send_to": send_to or ["pacs"]}],
            "base_dir": tmp_path,
        }
    )
    clock = Clock()
    card = linear_card()
    return Scheduler(config, db, spool, {card.id: card}, clock), clock


# --- stable_studies ----------------------------------------------------------------------


def test_study_is_stable_only_after_stable_seconds_without_a_new_instance(
    db: Database, spool: Spool
) -> None:
    study = StudySpec()
    first, second, third = _t1(study)
    _receive(db, spool, first, 0)
    assert _stable_uids(db, 9.999) == []
    _receive(db, spool, second, 5)
    assert _stable_uids(db, 10) == []  # 10 s after the first, 5 s after the last
    assert _stable_uids(db, 14.999) == []
    assert _stable_uids(db, 15) == [study.study_uid]  # exactly stable_seconds: stable
    _receive(db, spool, third, 15.5)
    assert _stable_uids(db, 20) == []
    assert _stable_uids(db, 25.5) == [study.study_uid]


def test_studies_settle_independently_oldest_first(db: Database, spool: Spool) -> None:
    early, late = StudySpec(), StudySpec()
    _receive(db, spool, _t1(late)[0], 4)
    _receive(db, spool, _t1(early)[0], 1)
    assert _stable_uids(db, 11) == [early.study_uid]
    assert _stable_uids(db, 14) == [early.study_uid, late.study_uid]
    assert _stable_uids(db, 14, stable=0) == [early.study_uid, late.study_uid]
    assert _stable_uids(db, 0.5, stable=0) == []


def test_routed_study_is_not_stable_again_until_an_instance_reopens_it(
    db: Database, spool: Spool
) -> None:
    study = StudySpec()
    series = _t1(study)
    _receive(db, spool, series[0], 0)
    with db.session() as session:
        (found,) = stable_studies(session, T0 + timedelta(seconds=60), STABLE)
        found.state = StudyState.ROUTED
    assert _stable_uids(db, 120) == []
    _receive(db, spool, series[1], 130)
    assert _study(db, study.study_uid).state == StudyState.RECEIVING
    assert _stable_uids(db, 139) == []
    assert _stable_uids(db, 140) == [study.study_uid]


def test_stable_studies_honours_its_limit(db: Database, spool: Spool) -> None:
    studies = [StudySpec() for _ in range(4)]
    for n, s in enumerate(studies):
        _receive(db, spool, _t1(s)[0], n)
    with db.session() as session:
        found = stable_studies(session, T0 + timedelta(seconds=100), STABLE, limit=2)
        assert [s.study_uid for s in found] == [s.study_uid for s in studies[:2]]


# --- study_series ------------------------------------------------------------------------


def test_study_series_groups_instances_and_skips_unreadable_files(
    db: Database, spool: Spool
) -> None:
    study = StudySpec()
    t1 = _t1(study, slices=3, series_number=4)
    broken = _t1(study, slices=2, description="T2 TSE", series_number=5)
    _receive(db, spool, t1[0], 0, data=b"garbage, not DICOM")  # header read from the next
    _receive(db, spool, t1[1], 1)
    _receive(db, spool, t1[2], 2)
    for ds in broken:
        _receive(db, spool, ds, 3, data=b"\x00" * 10)
    with db.session() as session:
        row = session.scalar(select(Study).where(Study.study_uid == study.study_uid))
        assert row is not None
        infos = study_series(session, row, spool)
    (info,) = infos
    assert info.series_uid == t1[0].SeriesInstanceUID
    assert info.sop_instance_uids == tuple(ds.SOPInstanceUID for ds in t1)
    assert info.series_number == 4
    assert info.header.SOPInstanceUID == t1[1].SOPInstanceUID
    assert "PixelData" not in info.header


# --- Scheduler ---------------------------------------------------------------------------


def test_scheduler_routes_a_stable_study_exactly_once(
    db: Database, spool: Spool, tmp_path: Path
) -> None:
    scheduler, clock = _scheduler(db, spool, tmp_path)
    study = StudySpec()
    for n, ds in enumerate(_t1(study)):
        _receive(db, spool, ds, n)

    clock.at(11.9)
    assert scheduler.run_once() is False
    assert _study(db, study.study_uid).state == StudyState.RECEIVING
    assert _jobs(db) == []

    clock.at(12)
    assert scheduler.run_once() is True
    routed = _study(db, study.study_uid)
    assert routed.state == StudyState.ROUTED
    assert routed.routed_at == T0 + timedelta(seconds=12)
    (job,) = _jobs(db)
    assert job.model_id == "mr-t1-to-ct"
    assert job.send_to == ["pacs"]

    for later in (13, 60, 3600):
        assert clock.at(later) and scheduler.run_once() is False
    assert len(_jobs(db)) == 1


def test_new_instance_reopens_a_routed_study_which_is_routed_again_after_settling(
    db: Database, spool: Spool, tmp_path: Path
) -> None:
    scheduler, clock = _scheduler(db, spool, tmp_path)
    study = StudySpec()
    t1 = _t1(study, slices=4)
    for ds in t1[:3]:
        _receive(db, spool, ds, 0)
    clock.at(10)
    assert scheduler.run_once() is True
    assert len(_jobs(db)) == 1

    _receive(db, spool, t1[3], 100)  # a late slice of the same T1
    assert _study(db, study.study_uid).state == StudyState.RECEIVING
    clock.at(109)
    assert scheduler.run_once() is False
    clock.at(110)
    assert scheduler.run_once() is True
    assert _study(db, study.study_uid).state == StudyState.ROUTED
    first, second = _jobs(db)
    assert first.fingerprint != second.fingerprint
    assert second.input_series == [t1[0].SeriesInstanceUID]


def test_routed_back_synthetic_output_reopens_but_makes_no_second_job(
    db: Database, spool: Spool, tmp_path: Path
) -> None:
    scheduler, clock = _scheduler(db, spool, tmp_path)
    study = StudySpec()
    for ds in _t1(study):
        _receive(db, spool, ds, 0)
    clock.at(10)
    scheduler.run_once()

    synthetic = axial_series(study, ramp_pixels(slices=3, rows=4, cols=4), modality="CT")
    for ds in synthetic:
        ds.SyntheticData = "YES"
        _receive(db, spool, ds, 50)
    clock.at(60)
    assert scheduler.run_once() is True
    assert _study(db, study.study_uid).state == StudyState.ROUTED
    assert len(_jobs(db)) == 1
    with db.session() as session:
        reasons = [e.detail["reason"] for e in session.scalars(select(AuditEvent))]
    assert reasons[-1].startswith("already decided as job ")


def test_sender_route_goes_back_to_the_calling_destination(
    db: Database, spool: Spool, tmp_path: Path
) -> None:
    scheduler, clock = _scheduler(db, spool, tmp_path, send_to=["sender"])
    study = StudySpec()
    for ds in _t1(study):
        _receive(db, spool, ds, 0, calling_ae="ORTHANC")
    clock.at(10)
    scheduler.run_once()
    (job,) = _jobs(db)
    assert job.send_to == ["pacs"]


def _with_malformed_series_number(ds: Dataset) -> bytes:
    """The file as a sloppy modality writes it: Series Number (IS) holding letters."""
    ds.SeriesNumber = 7777
    data = _bytes(ds)
    element = b"\x20\x00\x11\x00IS\x04\x00"
    assert data.count(element + b"7777") == 1
    return data.replace(element + b"7777", element + b"abcd")


def test_study_whose_routing_fails_is_marked_routed_with_the_error_and_blocks_no_other(
    db: Database,
    spool: Spool,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No valid code path makes routing raise, so the fault is injected: ``decide``
    raises for one study (as a bug would)."""
    scheduler, clock = _scheduler(db, spool, tmp_path)
    bad, good = StudySpec(), StudySpec()
    for ds in _t1(bad):
        _receive(db, spool, ds, 0)
    for ds in _t1(good):
        _receive(db, spool, ds, 1)  # stable later, so routed after the failing one
    real_decide = scheduler_module.decide

    def decide(series: Any, *args: Any) -> Any:
        if any(s.header.StudyInstanceUID == bad.study_uid for s in series):
            raise ValueError("injected routing failure")
        return real_decide(series, *args)

    monkeypatch.setattr(scheduler_module, "decide", decide)
    clock.at(20)
    assert scheduler.route_stable() == 2

    failed = _study(db, bad.study_uid)
    assert failed.state == StudyState.ROUTED
    assert failed.routed_at == T0 + timedelta(seconds=20)
    with db.session() as session:
        errors = list(session.scalars(select(AuditEvent).where(AuditEvent.kind == "route.error")))
    (error,) = errors
    assert error.study_uid == bad.study_uid
    assert error.detail["reason"].startswith("routing failed: ValueError: ")
    assert error.at == T0 + timedelta(seconds=20)

    assert _study(db, good.study_uid).state == StudyState.ROUTED
    (job,) = _jobs(db)
    with db.session() as session:
        owner = session.get(Study, job.study_id)
        assert owner is not None and owner.study_uid == good.study_uid

    clock.at(500)
    assert scheduler.route_stable() == 0  # the failure is not retried in a loop


def test_a_transient_routing_failure_is_retried_not_recorded_as_routed(
    db: Database,
    spool: Spool,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """SQLite's "database is locked" (a writer held the lock past busy_timeout) cannot
    be produced on demand, so it is injected, once, as SQLAlchemy raises it."""
    scheduler, clock = _scheduler(db, spool, tmp_path)
    locked, other = StudySpec(), StudySpec()
    for ds in _t1(locked):
        _receive(db, spool, ds, 0)
    for ds in _t1(other):
        _receive(db, spool, ds, 1)
    real_decide = scheduler_module.decide
    faults = iter([OperationalError("INSERT INTO job …", {}, Exception("database is locked"))])

    def decide(series: Any, *args: Any) -> Any:
        if any(s.header.StudyInstanceUID == locked.study_uid for s in series):
            fault = next(faults, None)
            if fault is not None:
                raise fault
        return real_decide(series, *args)

    monkeypatch.setattr(scheduler_module, "decide", decide)
    clock.at(20)
    assert scheduler.route_stable() == 1  # the other study; the locked one waits

    assert _study(db, locked.study_uid).state == StudyState.RECEIVING
    assert _study(db, other.study_uid).state == StudyState.ROUTED
    with db.session() as session:
        errors = session.scalars(select(AuditEvent).where(AuditEvent.kind == "route.error"))
        assert list(errors) == []

    clock.at(21)  # the next tick, no new instance needed
    assert scheduler.route_stable() == 1
    assert _study(db, locked.study_uid).state == StudyState.ROUTED
    with db.session() as session:
        owners = {session.get_one(Study, j.study_id).study_uid for j in _jobs(db)}
    assert owners == {locked.study_uid, other.study_uid}


def test_a_malformed_series_number_does_not_stop_routing(
    db: Database, spool: Spool, tmp_path: Path
) -> None:
    scheduler, clock = _scheduler(db, spool, tmp_path)
    study = StudySpec()
    for ds in _t1(study):
        _receive(db, spool, ds, 0, data=_with_malformed_series_number(ds))
    clock.at(20)
    with pytest.warns(UserWarning, match="Invalid value for VR IS: 'abcd'"):
        assert scheduler.route_stable() == 1
    assert _study(db, study.study_uid).state == StudyState.ROUTED
    assert len(_jobs(db)) == 1


# --- series made of what they are --------------------------------------------------------

RAW_DATA = "1.2.840.10008.5.1.4.1.1.66"
GRAYSCALE_PRESENTATION_STATE = "1.2.840.10008.5.1.4.1.1.11.1"
BASIC_TEXT_SR = "1.2.840.10008.5.1.4.1.1.88.11"
PHILIPS_SERIES_DATA = "1.3.46.670589.11.0.0.12.1"


def _other_object(image: Dataset, sop_class: str) -> Dataset:
    """A non-image object in ``image``'s series, as Philips and workstations add them: no
    Pixel Data, and a header that otherwise reads like the images' (it matches T1)."""
    ds = copy.deepcopy(image)
    for tag in [e.tag for e in ds if e.tag >= 0x00280000]:
        del ds[tag]
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


@pytest.mark.parametrize("first", [True, False], ids=["objects-first", "objects-last"])
def test_other_objects_in_an_image_series_are_left_out_whichever_arrives_first(
    db: Database,
    spool: Spool,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    first: bool,
) -> None:
    scheduler, clock = _scheduler(db, spool, tmp_path)
    study = StudySpec()
    t1 = _t1(study, slices=3)
    others = [
        _other_object(t1[0], c)
        for c in (RAW_DATA, PHILIPS_SERIES_DATA, GRAYSCALE_PRESENTATION_STATE, BASIC_TEXT_SR)
    ]
    arrivals = [*others, *t1] if first else [*t1, *others]
    for n, ds in enumerate(arrivals):
        _receive(db, spool, ds, n)

    with db.session() as session:
        row = session.scalar(select(Study).where(Study.study_uid == study.study_uid))
        assert row is not None
        (info,) = study_series(session, row, spool)
    assert info.is_image
    assert info.sop_instance_uids == tuple(ds.SOPInstanceUID for ds in t1)
    assert sorted(info.other_objects) == sorted(ds.SOPClassUID for ds in others)

    caplog.set_level("INFO", logger="dicom_node")
    clock.at(len(arrivals) + STABLE)
    assert scheduler.run_once() is True
    (job,) = _jobs(db)
    assert job.input_series == [t1[0].SeriesInstanceUID]
    (event,) = [r for r in caplog.records if r.getMessage() == "series.objects_ignored"]
    fields = event.fields  # type: ignore[attr-defined]
    assert (fields["images"], fields["ignored"]) == (3, 4)
    assert fields["series_uid"] == t1[0].SeriesInstanceUID


def test_a_series_of_other_objects_only_is_no_image_series(
    db: Database, spool: Spool, tmp_path: Path
) -> None:
    scheduler, clock = _scheduler(db, spool, tmp_path)
    study = StudySpec()
    raw = _other_object(_t1(study, slices=1)[0], RAW_DATA)
    _receive(db, spool, raw, 0)
    clock.at(STABLE + 1)
    assert scheduler.run_once() is True
    assert _jobs(db) == []
