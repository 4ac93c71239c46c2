"""The review gate on a real database (SQLite and PostgreSQL): the outbox holds a reviewed
route's series, a reviewer approves or rejects it, every refusal, the decision in every
view, Q/R hiding what is not released, and a re-run never inheriting a decision."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import write_config
from pydicom.dataset import Dataset
from sqlalchemy import select, update

from dicom_node.cli.main import main as cli
from dicom_node.dispatch.outbox import Outbox
from dicom_node.ops.outbox import list_deliveries
from dicom_node.ops.review import (
    NotAwaitingReview,
    ReviewRefused,
    approve,
    decision,
    reject,
    review_queue,
)
from dicom_node.query.matching import find, retrieve_keys
from storage.database import Database
from storage.models import (
    AuditEvent,
    Delivery,
    DeliveryState,
    Instance,
    Job,
    JobState,
    OutputSeries,
    OutputState,
    Series,
    Study,
)

NOW = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
STUDY_UID = "1.2.3.4"
SERIES_UID = "1.2.3.4.9003"
MODEL = "mr-t1-to-ct"


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    """A study with a written sCT series of a reviewed route, indexed like any output."""
    database = Database(database_url)
    with database.session() as session:
        study = Study(study_uid=STUDY_UID, first_received_at=NOW, last_received_at=NOW)
        job = Job(
            study=study,
            model_id=MODEL,
            model_version="1.0.0",
            input_series=["1.2.3.4.3"],
            fingerprint="f" * 64,
            send_to=["pacs"],
            state=JobState.DONE,
            created_at=NOW,
            updated_at=NOW,
        )
        series = Series(study=study, series_uid=SERIES_UID, modality="CT", series_number=9003)
        session.add_all([job, series])
        session.flush()
        session.add(
            Instance(
                series_id=series.id,
                sop_instance_uid=f"{SERIES_UID}.1",
                sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
                transfer_syntax_uid="1.2.840.10008.1.2.1",
                spool_key="outputs/x/1",
                size_bytes=1,
                received_at=NOW,
            )
        )
        session.add(
            OutputSeries(
                job_id=job.id,
                study_uid=STUDY_UID,
                series_uid=SERIES_UID,
                sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
                spool_key="outputs/x",
                instance_count=4,
                model_key=f"{MODEL}@1.0.0",
                provenance={},
                created_at=NOW,
                state=OutputState.WRITTEN,
                send_to=["pacs"],
            )
        )
    yield database
    database.dispose()


def _held(db: Database, at: datetime = NOW) -> None:
    """The outbox of a node whose route for the model has ``review: true`` runs once."""
    assert Outbox(db, lambda: at, reviewed=[MODEL]).run_once()


def _state(db: Database) -> OutputState:
    with db.session() as session:
        return session.scalars(select(OutputSeries.state)).one()


def _deliveries(db: Database) -> list[tuple[str, DeliveryState]]:
    with db.session() as session:
        return [(d.destination, d.state) for d in session.scalars(select(Delivery))]


def test_a_reviewed_route_s_series_awaits_review_with_nothing_queued(db: Database) -> None:
    _held(db)
    assert _state(db) == OutputState.AWAITING_REVIEW
    assert _deliveries(db) == []
    with db.session() as session:
        (row,) = review_queue(session, NOW + timedelta(minutes=5))
        assert (row["series_uid"], row["waited_s"], row["instances"]) == (SERIES_UID, 300, 4)
        assert decision(session, SERIES_UID)["status"] == "awaiting"  # type: ignore[index]


def test_a_route_without_review_is_released_as_before(db: Database) -> None:
    assert Outbox(db, lambda: NOW).run_once()
    assert _state(db) == OutputState.RELEASED
    assert _deliveries(db) == [("pacs", DeliveryState.PENDING)]


def test_approval_releases_and_queues_and_records_who_when_why(db: Database) -> None:
    _held(db)
    later = NOW + timedelta(hours=1)
    with db.session() as session:
        assert approve(session, SERIES_UID, "dr. who", later, comment="looks right") == ["pacs"]
    assert _state(db) == OutputState.RELEASED
    assert _deliveries(db) == [("pacs", DeliveryState.PENDING)]
    with db.session() as session:
        assert decision(session, SERIES_UID) == {
            "status": "approved",
            "at": later.isoformat(),
            "reviewer": "dr. who",
            "comment": "looks right",
        }
        (row,) = list_deliveries(session)
        assert row["review"]["reviewer"] == "dr. who"
        assert review_queue(session, later) == []


def test_rejection_keeps_the_series_and_never_sends_it(db: Database) -> None:
    _held(db)
    with db.session() as session:
        reject(session, SERIES_UID, "dr. no", "bone where there is air", NOW)
    assert _state(db) == OutputState.REJECTED
    assert not Outbox(db, lambda: NOW, reviewed=[MODEL]).run_once()
    assert _deliveries(db) == []
    with db.session() as session:
        assert decision(session, SERIES_UID) == {
            "status": "rejected",
            "at": NOW.isoformat(),
            "reviewer": "dr. no",
            "reason": "bone where there is air",
        }


def test_rejection_needs_a_reason_and_a_decision_a_reviewer(db: Database) -> None:
    _held(db)
    with db.session() as session, pytest.raises(ReviewRefused, match="needs a reason"):
        reject(session, SERIES_UID, "dr. no", "  ", NOW)
    with db.session() as session, pytest.raises(ReviewRefused, match="reviewer"):
        approve(session, SERIES_UID, "", NOW)
    assert _state(db) == OutputState.AWAITING_REVIEW


@pytest.mark.parametrize("state", [OutputState.WRITTEN, OutputState.RELEASED, OutputState.REJECTED])
def test_only_a_series_awaiting_review_is_decided(db: Database, state: OutputState) -> None:
    with db.session() as session:
        session.execute(update(OutputSeries).values(state=state))
    with db.session() as session, pytest.raises(NotAwaitingReview, match="not awaiting review"):
        approve(session, SERIES_UID, "dr. who", NOW)
    with db.session() as session, pytest.raises(NotAwaitingReview, match="not awaiting review"):
        reject(session, SERIES_UID, "dr. no", "wrong", NOW)
    assert _state(db) == state
    assert _deliveries(db) == []


def test_an_unknown_series_is_refused(db: Database) -> None:
    with db.session() as session, pytest.raises(ReviewRefused, match="no output series"):
        approve(session, "9.9.9", "dr. who", NOW)
    with db.session() as session, pytest.raises(ReviewRefused, match="no output series"):
        reject(session, "9.9.9", "dr. no", "wrong", NOW)


@pytest.mark.parametrize("decide", ["approve", "reject"])
def test_a_rerun_with_new_pixels_needs_a_fresh_decision(db: Database, decide: str) -> None:
    _held(db)
    with db.session() as session:
        if decide == "approve":
            approve(session, SERIES_UID, "dr. who", NOW)
        else:
            reject(session, SERIES_UID, "dr. no", "motion", NOW)
    later = NOW + timedelta(hours=2)
    with db.session() as session:  # what a re-run's _record_output does: new pixels, written
        session.execute(
            update(OutputSeries).values(
                state=OutputState.WRITTEN, instance_count=5, provenance={"run": 2}
            )
        )
    _held(db, later)
    assert _state(db) == OutputState.AWAITING_REVIEW
    with db.session() as session:
        kinds = list(
            session.scalars(
                select(AuditEvent.kind)
                .where(AuditEvent.series_uid == SERIES_UID)
                .order_by(AuditEvent.id)
            )
        )
        assert kinds[-2:] == ["review.superseded", "review.awaiting"]
        superseded = session.scalars(
            select(AuditEvent).where(AuditEvent.kind == "review.superseded")
        ).one()
        assert superseded.detail["decision"] == ("approved" if decide == "approve" else "rejected")
        assert decision(session, SERIES_UID)["status"] == "awaiting"  # type: ignore[index]
        (row,) = review_queue(session, later)
        assert row["instances"] == 5
    if decide == "approve":  # the queued delivery of the old version is not sent on
        with db.session() as session:
            approve(session, SERIES_UID, "dr. who", later)
        assert _deliveries(db) == [("pacs", DeliveryState.PENDING)]


@pytest.mark.parametrize("decide", ["approve", "reject"])
def test_a_decision_on_the_version_shown_is_refused_once_new_pixels_are_held(
    db: Database, decide: str
) -> None:
    _held(db)
    with db.session() as session:
        (shown,) = review_queue(session, NOW)
    with db.session() as session:  # a re-run lands while the reviewer looks
        session.execute(update(OutputSeries).values(state=OutputState.WRITTEN, instance_count=5))
    later = NOW + timedelta(minutes=5)
    _held(db, later)
    with pytest.raises(NotAwaitingReview, match="no longer version"), db.session() as session:
        if decide == "approve":
            approve(session, SERIES_UID, "dr. who", later, version=shown["version"])
        else:
            reject(session, SERIES_UID, "dr. no", "motion", later, version=shown["version"])
    assert _state(db) == OutputState.AWAITING_REVIEW
    assert _deliveries(db) == []
    with db.session() as session:
        (held,) = review_queue(session, later)
        assert held["version"] != shown["version"] and held["instances"] == 5
        approve(session, SERIES_UID, "dr. who", later, version=held["version"])
    assert _state(db) == OutputState.RELEASED


def _series_found(db: Database, unreleased: bool = False) -> list[str]:
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "SERIES"
    identifier.StudyInstanceUID = STUDY_UID
    identifier.SeriesInstanceUID = ""
    identifier.NumberOfStudyRelatedSeries = None
    with db.session() as session:
        return [str(a.SeriesInstanceUID) for a in find(session, identifier, unreleased)]


def _retrieved(db: Database, unreleased: bool = False) -> int:
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "SERIES"
    identifier.StudyInstanceUID = STUDY_UID
    identifier.SeriesInstanceUID = SERIES_UID
    with db.session() as session:
        return len(retrieve_keys(session, identifier, unreleased))


def test_q_r_serves_an_output_only_once_approved_unless_asked(db: Database) -> None:
    _held(db)
    assert (_series_found(db), _retrieved(db)) == ([], 0)
    assert (_series_found(db, unreleased=True), _retrieved(db, unreleased=True)) == (
        [SERIES_UID],
        1,
    )
    with db.session() as session:
        approve(session, SERIES_UID, "dr. who", NOW)
    assert (_series_found(db), _retrieved(db)) == ([SERIES_UID], 1)


def test_q_r_never_serves_a_rejected_output_unless_asked(db: Database) -> None:
    _held(db)
    with db.session() as session:
        reject(session, SERIES_UID, "dr. no", "motion", NOW)
    assert (_series_found(db), _retrieved(db)) == ([], 0)
    assert _series_found(db, unreleased=True) == [SERIES_UID]


def _config(db: Database, folder: Path) -> list[str]:
    """`--config` of a node on ``db``, for the CLI."""
    return ["--config", str(write_config(folder, {"storage": {"database_url": db.url}}))]


def test_cli_review_list_json_shape_and_text(
    db: Database, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(db, tmp_path)
    assert cli([*config, "review", "list", "--json"]) == 0
    assert capsys.readouterr().out == ""  # written, not yet held: not in the queue
    _held(db)
    assert cli([*config, "review", "list", "--json"]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    row = json.loads(line)
    assert set(row) == {
        "series_uid",
        "study_uid",
        "model",
        "instances",
        "send_to",
        "version",
        "awaiting_since",
        "waited_s",
    }
    assert (row["series_uid"], row["study_uid"], row["model"]) == (
        SERIES_UID,
        STUDY_UID,
        f"{MODEL}@1.0.0",
    )
    assert (row["instances"], row["send_to"]) == (4, ["pacs"])
    assert datetime.fromisoformat(row["awaiting_since"]) == NOW
    assert isinstance(row["waited_s"], int)
    assert cli([*config, "review", "list"]) == 0
    (text,) = capsys.readouterr().out.splitlines()
    version = row["version"]
    assert isinstance(version, int)
    assert text.startswith(
        f"{SERIES_UID}\tversion {version}\t{MODEL}@1.0.0\t4 instance(s)\twaiting "
    )
    assert text.endswith(f"\tstudy {STUDY_UID}")


@pytest.mark.parametrize("decide", ["approve", "reject"])
def test_cli_refuses_an_unknown_series(
    db: Database, tmp_path: Path, capsys: pytest.CaptureFixture[str], decide: str
) -> None:
    _held(db)
    reason = ["--reason", "artefact"] if decide == "reject" else []
    assert cli([*_config(db, tmp_path), "review", decide, "9.9.9", "--reviewer", "x", *reason]) == 1
    captured = capsys.readouterr()
    assert captured.err.strip() == "dicom-node: no output series 9.9.9"
    assert captured.out == ""
    assert _state(db) == OutputState.AWAITING_REVIEW


def test_cli_reject_needs_a_reason(
    db: Database, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _held(db)
    config = _config(db, tmp_path)
    with pytest.raises(SystemExit) as exited:
        cli([*config, "review", "reject", SERIES_UID, "--reviewer", "x"])
    assert exited.value.code == 2
    assert "the following arguments are required: --reason" in capsys.readouterr().err
    assert cli([*config, "review", "reject", SERIES_UID, "--reviewer", "x", "--reason", " "]) == 1
    assert capsys.readouterr().err.strip() == "dicom-node: a rejection needs a reason"
    assert _state(db) == OutputState.AWAITING_REVIEW


def test_cli_decides_only_a_series_awaiting_review(
    db: Database, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(db, tmp_path)
    approve_it = [*config, "review", "approve", SERIES_UID, "--reviewer", "dr. who"]
    assert cli(approve_it) == 1  # written: the outbox has not held it yet
    assert capsys.readouterr().err.strip() == (
        f"dicom-node: output series {SERIES_UID} is written, not awaiting review"
    )
    _held(db)
    assert cli([*approve_it, "--comment", "fine"]) == 0
    assert capsys.readouterr().out.strip() == (
        f"output series {SERIES_UID}: approved by dr. who, queued for pacs"
    )
    assert cli(approve_it) == 1
    assert capsys.readouterr().err.strip() == (
        f"dicom-node: output series {SERIES_UID} is released, not awaiting review"
    )
    reject_it = [*config, "review", "reject", SERIES_UID, "--reviewer", "x", "--reason", "late"]
    assert cli(reject_it) == 1
    assert "is released, not awaiting review" in capsys.readouterr().err
    assert _state(db) == OutputState.RELEASED
    assert _deliveries(db) == [("pacs", DeliveryState.PENDING)]
