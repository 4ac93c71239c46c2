"""The database schema: one row per unit of work, with explicit states.

Each stage of the flow reads rows the stage before it committed and commits its own:
instance rows (receive) → study state (assemble) → job rows (route) → output_series
rows (infer + label) → delivery rows (dispatch). The schema itself is created and
upgraded only by the Alembic migrations in ``storage/migrations``.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Enum,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

UID = String(64)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite has no time zones)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database; use UTC-aware datetimes")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSON, list[str]: JSON}


class StudyState(enum.StrEnum):
    RECEIVING = "receiving"
    """Instances arrived within the last ``stable_seconds``."""
    ROUTED = "routed"
    """Stable, and every route was decided; a new instance re-opens it."""


class JobState(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class DeliveryState(enum.StrEnum):
    PENDING = "pending"
    SENDING = "sending"
    DONE = "done"
    PARKED = "parked"
    """Gave up after the configured attempts; an operator can retry it."""


class OutputState(enum.StrEnum):
    """Where an output series stands; the dispatch stage reads it (docs/reliability.md)."""

    WRITTEN = "written"
    """In the spool and indexed; not yet cleared for sending."""
    AWAITING_REVIEW = "awaiting_review"
    """Held for a person's approval (the review gate; no route asks for it yet)."""
    REJECTED = "rejected"
    """Refused at review: never sent."""
    RELEASED = "released"
    """Cleared for sending: its deliveries are queued."""
    DELIVERED = "delivered"
    """Every destination stored it."""


class Role(enum.StrEnum):
    """What a user of the API and dashboard may do; each role may do what those before it
    may."""

    VIEWER = "viewer"
    """Reads everything the node shows."""
    REVIEWER = "reviewer"
    """Reads, and approves or rejects output series awaiting review."""
    ADMIN = "admin"
    """Everything: resends, forced completion, users and tokens."""


def _enum(e: type[enum.Enum]) -> Enum:
    return Enum(e, values_callable=lambda x: [m.value for m in x], native_enum=False, length=16)


class Study(Base):
    __tablename__ = "study"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_uid: Mapped[str] = mapped_column(UID, unique=True)
    state: Mapped[StudyState] = mapped_column(_enum(StudyState), default=StudyState.RECEIVING)
    first_received_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_received_at: Mapped[datetime] = mapped_column(UTCDateTime())
    routed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_calling_ae: Mapped[str] = mapped_column(String(16), default="")
    patient_name: Mapped[str] = mapped_column(String(324), default="")
    patient_id: Mapped[str] = mapped_column(String(64), default="")
    patient_birth_date: Mapped[str] = mapped_column(String(8), default="")
    patient_sex: Mapped[str] = mapped_column(String(16), default="")
    study_date: Mapped[str] = mapped_column(String(8), default="")
    study_time: Mapped[str] = mapped_column(String(16), default="")
    accession_number: Mapped[str] = mapped_column(String(16), default="")
    study_id: Mapped[str] = mapped_column(String(16), default="")
    study_description: Mapped[str] = mapped_column(String(64), default="")
    referring_physician_name: Mapped[str] = mapped_column(String(324), default="")
    """Patient and study attributes for C-FIND (the database is owner-only; logs never
    carry them)."""

    series: Mapped[list[Series]] = relationship(back_populates="study")

    __table_args__ = (Index("ix_study_state_last", "state", "last_received_at"),)


class Series(Base):
    __tablename__ = "series"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("study.id"), index=True)
    series_uid: Mapped[str] = mapped_column(UID, unique=True)
    modality: Mapped[str] = mapped_column(String(16), default="")
    sop_class_uid: Mapped[str] = mapped_column(UID, default="")
    series_number: Mapped[int | None] = mapped_column(Integer, nullable=True)
    series_description: Mapped[str] = mapped_column(String(64), default="")

    study: Mapped[Study] = relationship(back_populates="series")
    instances: Mapped[list[Instance]] = relationship(back_populates="series")


class Instance(Base):
    __tablename__ = "instance"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    series_id: Mapped[int] = mapped_column(ForeignKey("series.id"), index=True)
    sop_instance_uid: Mapped[str] = mapped_column(UID)
    sop_class_uid: Mapped[str] = mapped_column(UID)
    transfer_syntax_uid: Mapped[str] = mapped_column(UID)
    spool_key: Mapped[str] = mapped_column(String(255))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime())
    calling_ae: Mapped[str] = mapped_column(String(16), default="")
    instance_number: Mapped[int | None] = mapped_column(Integer, nullable=True)

    series: Mapped[Series] = relationship(back_populates="instances")

    __table_args__ = (UniqueConstraint("series_id", "sop_instance_uid", name="uq_instance_sop"),)


class Job(Base):
    """One model run on one study's input series."""

    __tablename__ = "job"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("study.id"), index=True)
    model_id: Mapped[str] = mapped_column(String(64))
    model_version: Mapped[str] = mapped_column(String(32))
    input_series: Mapped[list[str]] = mapped_column(JSON)
    """Series Instance UIDs in the model card's input order."""
    fingerprint: Mapped[str] = mapped_column(String(64))
    """SHA-256 of the input series' SOP Instance UIDs: new input instances → a new job."""
    send_to: Mapped[list[str]] = mapped_column(JSON)
    state: Mapped[JobState] = mapped_column(_enum(JobState), default=JobState.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    worker: Mapped[str | None] = mapped_column(String(64), nullable=True)
    claim: Mapped[str | None] = mapped_column(String(32), nullable=True)
    """The running claim's token (storage.queue): only the claim that holds it may renew
    the lease or finish the job; handing the job out again clears it."""
    output_series_uid: Mapped[str | None] = mapped_column(UID, nullable=True)
    slices_done: Mapped[int] = mapped_column(Integer, default=0)
    slices_total: Mapped[int] = mapped_column(Integer, default=0)
    """Progress of the running attempt, in slices through the model (0 of 0: not begun)."""

    study: Mapped[Study] = relationship()

    __table_args__ = (
        UniqueConstraint(
            "study_id", "model_id", "model_version", "fingerprint", name="uq_job_inputs"
        ),
        Index("ix_job_state", "state"),
    )


class OutputSeries(Base):
    """A synthetic series the node wrote to its spool."""

    __tablename__ = "output_series"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("job.id"), index=True)
    study_uid: Mapped[str] = mapped_column(UID)
    series_uid: Mapped[str] = mapped_column(UID, unique=True)
    sop_class_uid: Mapped[str] = mapped_column(UID)
    spool_key: Mapped[str] = mapped_column(String(255))
    instance_count: Mapped[int] = mapped_column(Integer)
    model_key: Mapped[str] = mapped_column(String(128))
    provenance: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    state: Mapped[OutputState] = mapped_column(
        _enum(OutputState), default=OutputState.WRITTEN, index=True
    )
    send_to: Mapped[list[str]] = mapped_column(JSON, default=list)
    """The destinations its route named when it was written; its deliveries go there."""

    deliveries: Mapped[list[Delivery]] = relationship(back_populates="output_series")


class Delivery(Base):
    """The outbox: one row per (output series, destination)."""

    __tablename__ = "delivery"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    output_series_id: Mapped[int] = mapped_column(ForeignKey("output_series.id"))
    destination: Mapped[str] = mapped_column(String(64))
    state: Mapped[DeliveryState] = mapped_column(
        _enum(DeliveryState), default=DeliveryState.PENDING
    )
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime())
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    worker: Mapped[str | None] = mapped_column(String(64), nullable=True)
    claim: Mapped[str | None] = mapped_column(String(32), nullable=True)
    """The sending claim's token, as on :class:`Job`; a re-run that re-arms the delivery
    clears it, so the send of the earlier copy cannot mark it done."""
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())

    output_series: Mapped[OutputSeries] = relationship(back_populates="deliveries")

    __table_args__ = (
        UniqueConstraint("output_series_id", "destination", name="uq_delivery_target"),
        Index("ix_delivery_due", "state", "next_attempt_at"),
    )


class AuditEvent(Base):
    """What happened to which study/series, for operators; UIDs only, no patient data."""

    __tablename__ = "audit_event"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    kind: Mapped[str] = mapped_column(String(48))
    study_uid: Mapped[str | None] = mapped_column(UID, nullable=True)
    series_uid: Mapped[str | None] = mapped_column(UID, nullable=True)
    job_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)

    __table_args__ = (Index("ix_audit_series", "series_uid"),)


class User(Base):
    """A person (or a system) that uses the API or the dashboard."""

    __tablename__ = "app_user"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[Role] = mapped_column(_enum(Role))
    password_hash: Mapped[str | None] = mapped_column(String(255), nullable=True)
    """argon2id; None: the user signs in with tokens only."""
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class ApiToken(Base):
    """A bearer token for the API; only its SHA-256 is stored (the token is 256 random
    bits, so a fast hash is as safe as a slow one and lets every request look it up)."""

    __tablename__ = "api_token"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("app_user.id"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    label: Mapped[str] = mapped_column(String(128), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    user: Mapped[User] = relationship()


class WebSession(Base):
    """A signed-in dashboard session: the cookie carries the secret, the row its SHA-256,
    the user and the CSRF token every form of the session must return."""

    __tablename__ = "web_session"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("app_user.id"), index=True)
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())

    user: Mapped[User] = relationship()


class SignInFailure(Base):
    """A failed dashboard sign-in: what ``api.throttle`` counts, in the database so that
    every node behind one load balancer, and a restarted one, counts the same."""

    __tablename__ = "sign_in_failure"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    address: Mapped[str] = mapped_column(String(64))
    user_name: Mapped[str] = mapped_column(String(64))
    """Lower-cased: ``Rita`` and ``rita`` are one guess target."""
    failed_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)

    __table_args__ = (Index("ix_sign_in_failure_pair", "address", "user_name"),)
