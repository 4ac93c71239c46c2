"""Prometheus metrics (``dicom_node.obs.metrics``): the database-derived ones equal the
rows and audit events a real database holds (SQLite and PostgreSQL); the in-process ones
count what a running node received, refused and synthesized; and a real Prometheus
server scrapes them and answers a query with the value."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from conftest import sends_to
from prometheus_client.parser import text_string_to_metric_families
from pynetdicom import AE

from dicom_node.dispatch.outbox import Outbox
from dicom_node.obs.metrics import exposition
from dicom_node.ops.accounts import add_user, create_token
from dicom_node.ops.review import approve, reject
from dicom_node.runtime.node import Node
from factories import MR_IMAGE_STORAGE, StudySpec, axial_series, ramp_pixels, write_series
from onnx_models import linear_card
from peers import Prometheus, free_port, stored_ok, storescu, wait_until
from storage.database import Database
from storage.models import (
    AuditEvent,
    Delivery,
    DeliveryState,
    Job,
    JobState,
    OutputSeries,
    OutputState,
    Role,
    Study,
    StudyState,
)

T0 = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
REVIEWED = "mr-t1-to-ct"
OTHER = "mr-t2-to-ct"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(db: Database, now: datetime | None = None) -> Samples:
    """Every sample of ``exposition(db)``, parsed as Prometheus parses it, by name and
    labels."""
    body, content_type = exposition(db, now)
    assert content_type.startswith("text/plain; version=0.0.4")
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }


def value(found: Samples, name: str, **labels: str) -> float:
    """The sample ``name`` with exactly ``labels``; a KeyError when it is missing."""
    return found[(name, frozenset(labels.items()))]


def _job(study: Study, model: str, state: JobState, n: int) -> Job:
    """Job ``n`` of ``study``, for ``model``, in ``state``, sending to pacs and archive."""
    return Job(
        study=study,
        model_id=model,
        model_version="1.0.0",
        input_series=[f"1.2.3.{n}.3"],
        fingerprint=f"{n:064d}",
        send_to=["pacs", "archive"],
        state=state,
        created_at=T0,
        updated_at=T0,
    )


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    """Three studies (two receiving, one routed); eight jobs (five done, two pending,
    one failed); five outputs of the done jobs: three of a reviewed route, held by the
    real outbox at T0, of which one is approved 10 minutes later (its two deliveries
    queued) and one rejected 2 hours later; one released with a pending and a parked
    delivery; one delivered with two done deliveries; and the dispatcher's audit events
    of three failed attempts (two to pacs, one to archive) and one success."""
    database = Database(database_url)
    with database.session() as session:
        studies = [
            Study(study_uid=f"1.2.3.{n}", first_received_at=T0, last_received_at=T0, state=state)
            for n, state in enumerate(
                [StudyState.RECEIVING, StudyState.RECEIVING, StudyState.ROUTED]
            )
        ]
        states = [JobState.DONE] * 5 + [JobState.PENDING, JobState.FAILED, JobState.PENDING]
        jobs = [
            _job(studies[2], REVIEWED if n < 3 else OTHER, state, n)
            for n, state in enumerate(states)
        ]
        session.add_all([*studies, *jobs])
        session.flush()
        held = [_output_row(jobs[n], n) for n in range(3)]
        released = _output_row(jobs[3], 3, OutputState.RELEASED)
        delivered = _output_row(jobs[4], 4, OutputState.DELIVERED)
        session.add_all([*held, released, delivered])
        session.flush()
        session.add_all(
            [
                _delivery(released, "pacs", DeliveryState.PENDING),
                _delivery(released, "archive", DeliveryState.PARKED),
                _delivery(delivered, "pacs", DeliveryState.DONE),
                _delivery(delivered, "archive", DeliveryState.DONE),
            ]
        )
        for kind, destination in [
            ("delivery.retry", "pacs"),
            ("delivery.retry", "pacs"),
            ("delivery.parked", "archive"),
            ("delivery.done", "pacs"),
        ]:
            session.add(
                AuditEvent(
                    at=T0,
                    kind=kind,
                    study_uid=released.study_uid,
                    series_uid=released.series_uid,
                    detail={"destination": destination, "attempt": 1, "error": None},
                )
            )
    outbox = Outbox(database, lambda: T0, reviewed=[REVIEWED])
    while outbox.run_once():
        pass
    with database.session() as session:
        approve(session, "1.2.3.0.9003", "dr. a", T0 + timedelta(minutes=10))
        reject(session, "1.2.3.1.9003", "dr. b", "bone edge wrong", T0 + timedelta(hours=2))
    yield database
    database.dispose()


def _output_row(job: Job, n: int, state: OutputState = OutputState.WRITTEN) -> OutputSeries:
    return OutputSeries(
        job_id=job.id,
        study_uid=job.study.study_uid,
        series_uid=f"1.2.3.{n}.9003",
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        spool_key=f"outputs/{n}",
        instance_count=4,
        model_key=f"{job.model_id}@1.0.0",
        provenance={},
        created_at=T0 - timedelta(hours=5),
        state=state,
        send_to=list(job.send_to),
    )


def _delivery(output: OutputSeries, destination: str, state: DeliveryState) -> Delivery:
    return Delivery(
        output_series_id=output.id,
        destination=destination,
        state=state,
        attempts=1,
        next_attempt_at=T0,
        created_at=T0,
    )


def test_states_are_counted_from_the_database_every_state_present(db: Database) -> None:
    found = samples(db, T0 + timedelta(hours=3))
    expected = {
        "dicomnode_studies": {"receiving": 2, "routed": 1},
        "dicomnode_jobs": {"pending": 2, "running": 0, "done": 5, "failed": 1},
        "dicomnode_outputs": {
            "written": 0,
            "awaiting_review": 1,
            "rejected": 1,
            "released": 2,
            "delivered": 1,
        },
        "dicomnode_deliveries": {"pending": 3, "sending": 0, "done": 2, "parked": 1},
    }
    for name, by_state in expected.items():
        got = {dict(labels)["state"]: v for (n, labels), v in found.items() if n == name}
        assert got == by_state, name


def test_delivery_failures_are_counted_by_destination_from_the_audit_events(
    db: Database,
) -> None:
    found = samples(db)
    failures = {
        dict(labels)["destination"]: v
        for (name, labels), v in found.items()
        if name == "dicomnode_delivery_failures_total"
    }
    assert failures == {"pacs": 2, "archive": 1}


def test_review_waits_come_from_the_review_gates_audit_events(db: Database) -> None:
    """The series still held has waited since the outbox held it (T0), not since it was
    written (5 hours before); the approved one waited 10 minutes, the rejected one 2 h."""
    found = samples(db, T0 + timedelta(hours=3))
    assert value(found, "dicomnode_review_oldest_waiting_seconds") == 3 * 3600
    wait = "dicomnode_review_wait_seconds"
    assert value(found, f"{wait}_count", decision="approved") == 1
    assert value(found, f"{wait}_sum", decision="approved") == 600
    assert value(found, f"{wait}_bucket", decision="approved", le="300.0") == 0
    assert value(found, f"{wait}_bucket", decision="approved", le="900.0") == 1
    assert value(found, f"{wait}_count", decision="rejected") == 1
    assert value(found, f"{wait}_sum", decision="rejected") == 7200
    assert value(found, f"{wait}_bucket", decision="rejected", le="3600.0") == 0
    assert value(found, f"{wait}_bucket", decision="rejected", le="14400.0") == 1
    assert value(found, f"{wait}_bucket", decision="rejected", le="+Inf") == 1
    with db.session() as session:
        approve(session, "1.2.3.2.9003", "dr. a", T0 + timedelta(hours=4))
    found = samples(db, T0 + timedelta(hours=5))
    assert value(found, "dicomnode_review_oldest_waiting_seconds") == 0
    assert value(found, f"{wait}_count", decision="approved") == 2
    assert value(found, f"{wait}_sum", decision="approved") == 600 + 4 * 3600


def _port(node: Node) -> int:
    assert node.address is not None
    return node.address[1]


def _refused(db: Database, reason: str) -> float:
    return value(samples(db), "dicomnode_instances_refused_total", reason=reason)


@pytest.mark.integration
def test_received_instances_are_counted(tmp_path: Path, node_factory: Callable[..., Node]) -> None:
    node = node_factory()
    before = value(samples(node.db), "dicomnode_instances_received_total")
    paths = write_series(axial_series(StudySpec(), ramp_pixels(slices=3)), tmp_path / "in")
    assert stored_ok(storescu("127.0.0.1", _port(node), "DICOMNODE", paths)) == 3
    found = samples(node.db)
    assert value(found, "dicomnode_instances_received_total") == before + 3
    studies = [value(found, "dicomnode_studies", state=s) for s in ("receiving", "routed")]
    assert sum(studies) == 1


@pytest.mark.integration
def test_a_store_refused_for_low_disk_is_counted_with_its_reason(
    tmp_path: Path, node_factory: Callable[..., Node]
) -> None:
    node = node_factory({"storage": {"min_free_bytes": 1 << 60}})
    received = value(samples(node.db), "dicomnode_instances_received_total")
    before = _refused(node.db, "disk_low")
    paths = write_series(axial_series(StudySpec(), ramp_pixels(slices=1)), tmp_path / "in")
    assert stored_ok(storescu("127.0.0.1", _port(node), "DICOMNODE", paths)) == 0
    assert _refused(node.db, "disk_low") == before + 1
    assert value(samples(node.db), "dicomnode_instances_received_total") == received


@pytest.mark.integration
def test_a_data_set_that_cannot_be_indexed_is_counted_as_cannot_understand(
    node_factory: Callable[..., Node],
) -> None:
    node = node_factory()
    before = _refused(node.db, "cannot_understand")
    ds = axial_series(StudySpec(), ramp_pixels(slices=1))[0]
    del ds.StudyInstanceUID
    ae = AE(ae_title="PYNETDICOM")
    ae.add_requested_context(MR_IMAGE_STORAGE, [str(ds.file_meta.TransferSyntaxUID)])
    assoc = ae.associate("127.0.0.1", _port(node), ae_title="DICOMNODE")
    assert assoc.is_established
    try:
        assert assoc.send_c_store(ds).Status == 0xC000
    finally:
        assoc.release()
    assert _refused(node.db, "cannot_understand") == before + 1


@pytest.mark.integration
def test_a_synthesized_study_is_timed_and_its_failed_deliveries_counted(
    tmp_path: Path, node_factory: Callable[..., Node], models_dir: Path
) -> None:
    """The whole flow in one node, its destination a port nobody listens on: the job's
    duration, inference time per slice and the model's provider are observed in process,
    and the refused connections count as delivery failures through the database."""
    model = linear_card().key
    node = node_factory({**sends_to(free_port()), "dispatch": {"backoff_initial_s": 0.2}})
    before = samples(node.db)
    paths = write_series(axial_series(StudySpec(), ramp_pixels(slices=6)), tmp_path / "in")
    assert stored_ok(storescu("127.0.0.1", _port(node), "DICOMNODE", paths)) == 6

    def failed_twice() -> Samples | None:
        found = samples(node.db)
        key = ("dicomnode_delivery_failures_total", frozenset({("destination", "pacs")}))
        return found if found.get(key, 0) >= 2 else None

    found = wait_until(failed_twice, 60, what="two failed deliveries to pacs")
    assert value(found, "dicomnode_jobs", state="done") == 1
    assert value(found, "dicomnode_outputs", state="released") == 1
    assert value(found, "dicomnode_deliveries", state="done") == 0
    provider = {"model": model, "provider": "CPUExecutionProvider"}
    assert value(found, "dicomnode_inference_provider_info", **provider) == 1

    def grew(name: str, **labels: str) -> float:
        key = (name, frozenset(labels.items()))
        return found[key] - before.get(key, 0)

    assert grew("dicomnode_job_duration_seconds_count", outcome="done") == 1
    assert grew("dicomnode_job_duration_seconds_sum", outcome="done") > 0
    assert grew("dicomnode_inference_seconds_per_slice_count", model=model) == 1
    assert 0 < grew("dicomnode_inference_seconds_per_slice_sum", model=model) < 10


class _MetricsServer(http.server.ThreadingHTTPServer):
    """Serves ``exposition(db)`` at every path on a free loopback port, as the API stage's
    ``GET /metrics`` does."""

    def __init__(self, db: Database) -> None:
        database = db

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body, content_type = exposition(database)
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args: object) -> None:
                """Quiet: the test's output is not the place for access lines."""

        super().__init__(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.server_address[1]}"


def _scraped(prometheus: Prometheus, promql: str) -> float | None:
    result = prometheus.query(promql)
    return float(result[0]["value"][1]) if result else None


@pytest.mark.integration
def test_prometheus_scrapes_the_metrics_and_answers_a_query(tmp_path: Path, db: Database) -> None:
    server = _MetricsServer(db)
    server.thread.start()
    prometheus = Prometheus(tmp_path / "prometheus", [server.target]).start()
    try:
        awaiting = wait_until(
            lambda: _scraped(prometheus, 'dicomnode_outputs{state="awaiting_review"}'),
            30,
            what="Prometheus to scrape the metrics",
        )
        failures = _scraped(prometheus, 'dicomnode_delivery_failures_total{destination="pacs"}')
    finally:
        prometheus.stop()
        server.shutdown()
        server.server_close()
    assert awaiting == 1
    assert failures == 2


@pytest.mark.integration
def test_prometheus_scrapes_the_node(tmp_path: Path, node_factory: Callable[..., Node]) -> None:
    """Prometheus scrapes ``/metrics`` of a node whose API stage serves it, and reads back
    what the node received."""
    node = node_factory()
    assert node.api_address is not None
    api_port = node.api_address[1]
    paths = write_series(axial_series(StudySpec(), ramp_pixels(slices=2)), tmp_path / "in")
    assert stored_ok(storescu("127.0.0.1", _port(node), "DICOMNODE", paths)) == 2
    prometheus = Prometheus(tmp_path / "prometheus", [f"127.0.0.1:{api_port}"]).start()
    try:
        studies = wait_until(
            lambda: _scraped(prometheus, "sum(dicomnode_studies)"),
            30,
            what="Prometheus to scrape the node",
        )
    finally:
        prometheus.stop()
    assert studies == 1


def test_metrics_auth_asks_for_a_viewers_token(node_factory: Callable[..., Node]) -> None:
    """With ``api.metrics_auth`` /metrics answers 401 without a token and the metrics
    with a viewer's; without it, anyone on the API's address may scrape."""
    node = node_factory({"api": {"host": "127.0.0.1", "port": free_port(), "metrics_auth": True}})
    assert node.api_address is not None
    url = f"http://127.0.0.1:{node.api_address[1]}/metrics"
    with node.db.session() as session:
        add_user(session, "prometheus", Role.VIEWER, None, datetime.now(UTC))
        _, token = create_token(session, "prometheus", "scraper", datetime.now(UTC))
    assert httpx.get(url).status_code == 401
    answer = httpx.get(url, headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 200
    assert "dicomnode_studies" in answer.text
