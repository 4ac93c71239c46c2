"""The operator's use-cases on a real database (SQLite and PostgreSQL): what `outbox
resend` changes in the outbox, and what it refuses."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from dicom_node.ops.outbox import ResendRefused, resend
from storage.database import Database
from storage.models import (
    AuditEvent,
    Delivery,
    DeliveryState,
    Job,
    JobState,
    OutputSeries,
    OutputState,
    Study,
)

NOW = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
SERIES_UID = "1.2.3.4.9003"
DESTINATIONS = {"pacs", "archive"}


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    """An output series delivered to the PACS, its delivery done after two attempts."""
    database = Database(database_url)
    with database.session() as session:
        study = Study(study_uid="1.2.3.4", first_received_at=NOW, last_received_at=NOW)
        job = Job(
            study=study,
            model_id="mr-t1-to-ct",
            model_version="1.0.0",
            input_series=["1.2.3.4.3"],
            fingerprint="f" * 64,
            send_to=["pacs"],
            state=JobState.DONE,
            created_at=NOW,
            updated_at=NOW,
        )
        session.add(job)
        session.flush()
        output = OutputSeries(
            job_id=job.id,
            study_uid="1.2.3.4",
            series_uid=SERIES_UID,
            sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
            spool_key="outputs/x",
            instance_count=4,
            model_key="mr-t1-to-ct@1.0.0",
            provenance={},
            created_at=NOW,
            state=OutputState.DELIVERED,
            send_to=["pacs"],
        )
        session.add(output)
        session.flush()
        session.add(
            Delivery(
                output_series_id=output.id,
                destination="pacs",
                state=DeliveryState.DONE,
                attempts=2,
                next_attempt_at=NOW,
                created_at=NOW,
                delivered_at=NOW,
            )
        )
    yield database
    database.dispose()


def _deliveries(db: Database) -> dict[str, tuple[DeliveryState, int]]:
    with db.session() as session:
        return {d.destination: (d.state, d.attempts) for d in session.scalars(select(Delivery))}


def _state(db: Database) -> OutputState:
    with db.session() as session:
        return session.scalars(select(OutputSeries.state)).one()


def test_resend_rearms_the_routes_deliveries_and_releases_the_series(db: Database) -> None:
    later = NOW + timedelta(hours=1)
    with db.session() as session:
        assert resend(session, SERIES_UID, later, DESTINATIONS) == ["pacs"]
    assert _deliveries(db) == {"pacs": (DeliveryState.PENDING, 0)}
    assert _state(db) == OutputState.RELEASED


def test_resend_to_a_named_destination_queues_that_one_only(db: Database) -> None:
    with db.session() as session:
        assert resend(session, SERIES_UID, NOW, DESTINATIONS, "archive", by="ops") == ["archive"]
    with db.session() as session:
        (event,) = session.scalars(select(AuditEvent).where(AuditEvent.kind == "outbox.resend"))
        assert (event.series_uid, event.detail) == (SERIES_UID, {"by": "ops", "to": ["archive"]})
    assert _deliveries(db) == {
        "pacs": (DeliveryState.DONE, 2),
        "archive": (DeliveryState.PENDING, 0),
    }
    assert _state(db) == OutputState.RELEASED


@pytest.mark.parametrize(
    "state", [OutputState.WRITTEN, OutputState.AWAITING_REVIEW, OutputState.REJECTED]
)
def test_a_series_not_cleared_for_sending_is_not_resent(db: Database, state: OutputState) -> None:
    with db.session() as session:
        session.scalars(select(OutputSeries)).one().state = state
    with pytest.raises(ResendRefused, match=f"is {state.value}"), db.session() as session:
        resend(session, SERIES_UID, NOW, DESTINATIONS)
    assert _deliveries(db) == {"pacs": (DeliveryState.DONE, 2)}


def test_an_unknown_series_or_destination_is_refused_and_nothing_changes(db: Database) -> None:
    with pytest.raises(ResendRefused, match="no output series"), db.session() as session:
        resend(session, "1.2.3.4.5", NOW, DESTINATIONS)
    with pytest.raises(ResendRefused, match="no destination named nowhere"), db.session() as s:
        resend(s, SERIES_UID, NOW, DESTINATIONS, to="nowhere")
    assert _deliveries(db) == {"pacs": (DeliveryState.DONE, 2)}
    assert _state(db) == OutputState.DELIVERED
