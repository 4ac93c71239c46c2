"""Prometheus metrics, all named ``dicomnode_…``: what the node holds and what it did.

Two kinds, because the stages may run in separate processes (or hosts) that share only
the database:

* **From the database, read at scrape time** (:class:`DatabaseCollector`): studies, jobs,
  output series and deliveries by state, delivery failures by destination, how long
  outputs have waited for review and how long decided ones waited. They are right
  whichever process serves ``/metrics``, as they count rows every stage commits.
* **In-process** (:data:`REGISTRY`): events only the process that saw them knows of:
  C-STOREs received and refused, job durations, inference time per slice, and the
  inference providers its models run on. They are those of the process serving
  ``/metrics``; a stage in another process contributes only through the database.

:func:`exposition` renders both in Prometheus' text format; the API's ``GET /metrics``
answers with it. Labels hold only fixed vocabularies (states, reasons, outcomes) and
configured names (models, destinations, providers), never UIDs or patient data.
"""

from __future__ import annotations

import enum
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString
from sqlalchemy import func, select
from sqlalchemy.orm import QueryableAttribute, Session, aliased

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
    StudyState,
)

disable_created_metrics()
"""No ``…_created`` series beside each counter and histogram: Prometheus' text format has
no use for them, and they would double what a scrape reads."""

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""Prometheus' text format as every Prometheus server reads it; the names and labels here
need none of the later versions' escaping."""

REGISTRY = CollectorRegistry()
"""The in-process metrics; its own registry (not prometheus_client's global one), so
that what it holds is exactly the node's, and tests can read it."""

REFUSAL_REASONS = (
    "shutting_down",
    "disk_low",
    "cannot_understand",
    "spool_error",
    "database_error",
    "unexpected_error",
)
"""Why the receive stage refused a C-STORE, as the ``reason`` label says it:
the node was draining for shutdown; free disk below ``storage.min_free_bytes``; the
data set cannot be indexed (Cannot Understand, 0xC000); writing the spool failed;
indexing failed; a fault nobody foresaw. All but ``cannot_understand`` answer Out of
Resources (0xA700), which senders retry."""

JOB_OUTCOMES = ("done", "retry", "failed", "lease_lost")
"""How a job run ended, as the ``outcome`` label says it (lease_lost: the job was handed
to another worker while this one ran it, and its results were dropped)."""

INSTANCES_RECEIVED = Counter(
    "dicomnode_instances_received",
    "C-STORE requests stored and answered Success by this process's receive stage.",
    registry=REGISTRY,
)
INSTANCES_REFUSED = Counter(
    "dicomnode_instances_refused",
    "C-STORE requests this process's receive stage answered with a failure status, by "
    "reason: " + ", ".join(REFUSAL_REASONS) + ".",
    ["reason"],
    registry=REGISTRY,
)
for _reason in REFUSAL_REASONS:
    INSTANCES_REFUSED.labels(_reason)

JOB_DURATION = Histogram(
    "dicomnode_job_duration_seconds",
    "Seconds one synthesis job run took in this process, from claim to its end "
    "(decode, guard, inference, writing, commit), by outcome: " + ", ".join(JOB_OUTCOMES) + ".",
    ["outcome"],
    buckets=(0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800),
    registry=REGISTRY,
)
for _outcome in JOB_OUTCOMES:
    JOB_DURATION.labels(_outcome)

INFERENCE_SECONDS_PER_SLICE = Histogram(
    "dicomnode_inference_seconds_per_slice",
    "Wall-clock seconds of a model run (every pass, uncertainty passes included) divided "
    "by the slices of its output volume, by model (id@version), in this process.",
    ["model"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
    registry=REGISTRY,
)
INFERENCE_PROVIDER = Gauge(
    "dicomnode_inference_provider_info",
    "1 for each ONNX Runtime execution provider a model loaded in this process runs on, "
    "by model (id@version) and provider.",
    ["model", "provider"],
    registry=REGISTRY,
)


def note_providers(model: str, providers: Sequence[str]) -> None:
    """Records the providers ``model`` (id@version) was loaded with, replacing any it was
    loaded with before in this process."""
    for labels in [k for k in _provider_labels() if k[0] == model]:
        INFERENCE_PROVIDER.remove(*labels)
    for provider in providers:
        INFERENCE_PROVIDER.labels(model, provider).set(1)


def _provider_labels() -> list[tuple[str, str]]:
    """The (model, provider) label pairs the provider gauge holds now."""
    return [
        (sample.labels["model"], sample.labels["provider"])
        for family in INFERENCE_PROVIDER.collect()
        for sample in family.samples
    ]


REVIEW_WAIT_BUCKETS = (60.0, 300.0, 900.0, 3600.0, 4 * 3600.0, 12 * 3600.0, 86400.0, 3 * 86400.0)
"""Review waits range from minutes to days (a reviewer may be away over a weekend)."""

DELIVERY_FAILURE_EVENTS = ("delivery.retry", "delivery.parked")
"""Audit kinds the dispatcher records for a failed send attempt (retried later, or
parked after the last attempt); one event per failed attempt."""


def _counts_by_state(
    session: Session, column: QueryableAttribute[Any], states: Iterable[enum.Enum]
) -> dict[str, int]:
    """Rows per state value, every state present (zero when no row has it)."""
    counts = {str(state.value): 0 for state in states}
    for state, count in session.execute(select(column, func.count()).group_by(column)).all():
        counts[str(state.value)] = int(count)
    return counts


def _state_gauge(name: str, documentation: str, counts: dict[str, int]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation, labels=["state"])
    for state, count in counts.items():
        family.add_metric([state], count)
    return family


class DatabaseCollector(Collector):
    """The metrics read from the database when scraped: right whichever process runs
    which stage, since every stage commits its rows and audit events there. All are read
    in one transaction, so they agree with each other."""

    def __init__(self, db: Database, now: datetime | None = None) -> None:
        """``now``: the time review waits are measured to (default: the scrape's)."""
        self.db = db
        self.now = now

    def collect(self) -> Iterator[Metric]:
        now = self.now or datetime.now(UTC)
        with self.db.session() as session:
            families = [
                _state_gauge(
                    "dicomnode_studies",
                    "Studies the node holds, by state (receiving: instances arrived within "
                    "stable_seconds; routed: every route decided).",
                    _counts_by_state(session, Study.state, StudyState),
                ),
                _state_gauge(
                    "dicomnode_jobs",
                    "Synthesis jobs, by state (pending, running, done, failed).",
                    _counts_by_state(session, Job.state, JobState),
                ),
                _state_gauge(
                    "dicomnode_outputs",
                    "Output series the node wrote, by state (written, awaiting_review, "
                    "rejected, released, delivered).",
                    _counts_by_state(session, OutputSeries.state, OutputState),
                ),
                _state_gauge(
                    "dicomnode_deliveries",
                    "Deliveries (one per output series and destination), by state "
                    "(pending, sending, done, parked).",
                    _counts_by_state(session, Delivery.state, DeliveryState),
                ),
                _delivery_failures(session),
                _review_oldest(session, now),
                _review_waits(session),
            ]
        yield from families


def _delivery_failures(session: Session) -> CounterMetricFamily:
    """Failed send attempts per destination, from the dispatcher's audit events."""
    destination = AuditEvent.detail["destination"].as_string()
    family = CounterMetricFamily(
        "dicomnode_delivery_failures",
        "Failed attempts to send an output series, by destination (each attempt that ended "
        "in a retry or in parking the delivery), since the database was created.",
        labels=["destination"],
    )
    rows = session.execute(
        select(destination, func.count())
        .where(AuditEvent.kind.in_(DELIVERY_FAILURE_EVENTS))
        .group_by(destination)
    ).all()
    for name, count in rows:
        family.add_metric([str(name)], int(count))
    return family


def _review_oldest(session: Session, now: datetime) -> GaugeMetricFamily:
    """How long the output series waiting longest for review has waited: since its
    latest hold (a re-run holds it anew), or since it was written when no hold was
    recorded; 0 when none waits."""
    held = (
        select(AuditEvent.series_uid, func.max(AuditEvent.at).label("at"))
        .where(AuditEvent.kind == "review.awaiting")
        .group_by(AuditEvent.series_uid)
        .subquery()
    )
    rows = session.execute(
        select(OutputSeries.created_at, held.c.at)
        .outerjoin(held, held.c.series_uid == OutputSeries.series_uid)
        .where(OutputSeries.state == OutputState.AWAITING_REVIEW)
    ).all()
    waits = [(now - (at if at is not None else created)).total_seconds() for created, at in rows]
    return GaugeMetricFamily(
        "dicomnode_review_oldest_waiting_seconds",
        "Seconds the output series waiting longest for review has waited (0 when none "
        'waits); dicomnode_outputs{state="awaiting_review"} counts them.',
        value=max([0.0, *waits]),
    )


def _review_waits(session: Session) -> HistogramMetricFamily:
    """Seconds between each review decision and the hold it decided, by decision."""
    decided = aliased(AuditEvent)
    hold = (
        select(func.max(AuditEvent.at))
        .where(
            AuditEvent.series_uid == decided.series_uid,
            AuditEvent.kind == "review.awaiting",
            AuditEvent.id < decided.id,
        )
        .scalar_subquery()
    )
    rows = session.execute(
        select(decided.kind, decided.at, hold).where(
            decided.kind.in_(("review.approved", "review.rejected"))
        )
    ).all()
    waits: dict[str, list[float]] = defaultdict(list)
    for kind, at, held_at in rows:
        if held_at is not None:
            waits[kind.removeprefix("review.")].append((at - held_at).total_seconds())
    family = HistogramMetricFamily(
        "dicomnode_review_wait_seconds",
        "Seconds each decided output series waited for review, from its hold to the "
        "reviewer's decision, by decision (approved, rejected), from the audit events.",
        labels=["decision"],
    )
    for decision in ("approved", "rejected"):
        values = waits[decision]
        buckets = [(floatToGoString(b), sum(v <= b for v in values)) for b in REVIEW_WAIT_BUCKETS]
        family.add_metric(
            [decision], [*buckets, ("+Inf", len(values))], sum_value=float(sum(values))
        )
    return family


def exposition(db: Database, now: datetime | None = None) -> tuple[bytes, str]:
    """The body and Content-Type of a ``/metrics`` answer: this process's metrics and
    those read from ``db`` (one transaction; pass a read-only Database to keep a scrape
    from taking SQLite's write lock). ``now``: when review waits end (default: now)."""
    from_db = CollectorRegistry()
    from_db.register(DatabaseCollector(db, now))
    return generate_latest(REGISTRY) + generate_latest(from_db), CONTENT_TYPE
