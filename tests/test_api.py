"""The REST API over real HTTP, on a running node with a real database (SQLite and
PostgreSQL) and a real Orthanc as its destination: authentication and roles, forced
completion, jobs and their progress, previews, provenance, the review cycle ending in
the PACS (or never reaching it), the outbox, models, destinations with a real C-ECHO,
users, and the OpenAPI document."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pydicom
import pytest
from conftest import write_config
from PIL import Image
from sqlalchemy import delete, select

from dicom_node.config import load_config
from dicom_node.evidence.provenance import read_private_block
from dicom_node.ops.accounts import add_user, create_token, revoke_token
from dicom_node.runtime.node import Node
from factories import StudySpec, axial_series, ramp_pixels, write_series
from onnx_models import conv1x1_model, linear_card
from peers import Orthanc, PostgresServer, free_port, stored_ok, storescu, wait_until
from storage.database import Database
from storage.models import (
    AuditEvent,
    Base,
    Delivery,
    DeliveryState,
    Instance,
    OutputSeries,
    Role,
    Series,
)

pytestmark = pytest.mark.integration

SLICES, ROWS, COLS = 8, 64, 72
NOW = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)

PROTECTED = [
    ("GET", "/api/v1/me"),
    ("GET", "/api/v1/users"),
    ("GET", "/api/v1/outputs"),
    ("GET", "/api/v1/outputs/{output_id}"),
    ("GET", "/api/v1/outputs/{output_id}/provenance"),
    ("GET", "/api/v1/outputs/{output_id}/preview.png"),
    ("POST", "/api/v1/outputs/{output_id}/approve"),
    ("POST", "/api/v1/outputs/{output_id}/reject"),
    ("POST", "/api/v1/outputs/{output_id}/resend"),
    ("GET", "/api/v1/studies"),
    ("GET", "/api/v1/studies/{study_instance_uid}"),
    ("POST", "/api/v1/studies/{study_instance_uid}/complete"),
    ("GET", "/api/v1/jobs"),
    ("GET", "/api/v1/outbox"),
    ("POST", "/api/v1/outbox/{delivery_id}/retry"),
    ("GET", "/api/v1/models"),
    ("GET", "/api/v1/destinations"),
    ("POST", "/api/v1/destinations/{name}/echo"),
]
"""Every endpoint behind a token, as the OpenAPI document names it."""
IDS = {"output_id": 1, "study_instance_uid": "1.2.3", "delivery_id": 1, "name": "pacs"}


@dataclass
class Env:
    """A node with a reviewed route to an Orthanc, two studies held for review, and a
    token per role."""

    node: Node
    pacs: Orthanc
    url: str
    tokens: dict[str, str]
    revoked: str
    studies: list[StudySpec] = field(default_factory=list)

    def client(self, role: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.tokens[role]}"} if role else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)

    def get(self, path: str, role: str = "viewer", **params: Any) -> httpx.Response:
        with self.client(role) as c:
            return c.get(path, params=params)

    def post(self, path: str, role: str, body: Any = None) -> httpx.Response:
        with self.client(role) as c:
            return c.post(path, json=body)

    def output_of(self, study: StudySpec) -> dict[str, Any]:
        (row,) = [
            o
            for o in self.get("/api/v1/outputs").json()
            if o["study_instance_uid"] == study.study_uid
        ]
        return row


def _accounts(db: Database) -> tuple[dict[str, str], str]:
    tokens = {}
    with db.session() as session:
        for role in Role:
            add_user(session, role.value, role, None, NOW)
            tokens[role.value] = create_token(session, role.value, "tests", NOW)[1]
        revoked_id, revoked = create_token(session, "admin", "revoked", NOW)
        revoke_token(session, revoked_id, NOW)
    return tokens, revoked


def _empty(url: str) -> None:
    db = Database(url)
    with db.session() as session:
        for table in reversed(Base.metadata.sorted_tables):
            session.execute(delete(table))
    db.dispose()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def env(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    signing_keys: tuple[Path, Path],
) -> Iterator[Env]:
    folder = tmp_path_factory.mktemp(f"api-{request.param}")
    database_url = f"sqlite:///{folder / 'var' / 'node.db'}"
    if request.param == "postgresql":
        postgres: PostgresServer = request.getfixturevalue("postgres")
        database_url = postgres.url
        _empty(database_url)
    models = folder / "models"
    models.mkdir()
    conv1x1_model(models / "mr-t1-to-ct.onnx", linear_card(), weights=[2.0], bias=-1000.0)
    pacs = Orthanc(folder=folder / "orthanc").start()
    overrides = {
        "node": {"stable_seconds": 300.0},
        "storage": {"database_url": database_url},
        "inference": {"models_dir": str(models)},
        "destinations": [
            {"name": "pacs", "ae_title": "ORTHANC", "host": "127.0.0.1", "port": pacs.dicom_port},
            {"name": "closed", "ae_title": "NOBODY", "host": "127.0.0.1", "port": free_port()},
        ],
        "routes": [{"model": "mr-t1-to-ct", "send_to": ["pacs"], "review": True}],
    }
    node = Node(load_config(write_config(folder, overrides, signing_keys)))
    node.start()
    try:
        assert node.address is not None and node.api_address is not None
        tokens, revoked = _accounts(node.db)
        env = Env(node, pacs, f"http://127.0.0.1:{node.api_address[1]}", tokens, revoked)
        for i in range(2):
            study = StudySpec()
            pixels = ramp_pixels(SLICES, ROWS, COLS) + 400  # HU 0 to ~390: some in the window
            paths = write_series(axial_series(study, pixels), folder / f"t1-{i}")
            assert stored_ok(storescu("127.0.0.1", node.address[1], "DICOMNODE", paths)) == SLICES
            env.studies.append(study)
        yield env
    finally:
        node.stop(drain_s=5)
        pacs.stop()
        if request.param == "postgresql":
            _empty(database_url)


def test_health_needs_no_credentials(env: Env) -> None:
    with env.client() as c:
        answer = c.get("/health")
    assert answer.status_code == 200 and answer.json()["status"] == "ok"


@pytest.mark.parametrize(("method", "path"), PROTECTED)
def test_every_endpoint_needs_a_valid_token(env: Env, method: str, path: str) -> None:
    for headers in (
        {},
        {"Authorization": "Bearer dn_not-a-token"},
        {"Authorization": "Basic YWRtaW46YWRtaW4="},
        {"Authorization": f"Bearer {env.revoked}"},
    ):
        with httpx.Client(base_url=env.url, headers=headers, timeout=30) as c:
            answer = c.request(method, path.format(**IDS))
        assert answer.status_code == 401, (headers, answer.text)
        assert answer.json() == {"detail": "authentication required"}
        assert answer.headers["www-authenticate"] == "Bearer"


def test_me_and_users(env: Env) -> None:
    for role in ("viewer", "reviewer", "admin"):
        assert env.get("/api/v1/me", role).json() == {"name": role, "role": role}
    users = env.get("/api/v1/users", "admin").json()
    assert {u["name"]: (u["role"], u["tokens"]) for u in users} == {
        "viewer": ("viewer", 1),
        "reviewer": ("reviewer", 1),
        "admin": ("admin", 1),
    }
    assert not any("hash" in key for u in users for key in u)
    refused = env.get("/api/v1/users", "reviewer")
    assert refused.status_code == 403
    assert refused.json() == {"detail": "reviewer is a reviewer; needs admin"}


def test_forcing_a_study_complete_routes_it_at_once(env: Env) -> None:
    first = env.studies[0].study_uid
    listed = env.get("/api/v1/studies").json()
    assert {s["study_uid"]: s["state"] for s in listed} == {
        s.study_uid: "receiving" for s in env.studies
    }
    assert env.get("/api/v1/studies", state="receiving").json() == listed
    assert env.get("/api/v1/studies", state="routed").json() == []
    assert env.get("/api/v1/studies", state="done").status_code == 422
    assert env.post(f"/api/v1/studies/{first}/complete", "reviewer").status_code == 403
    assert env.post(f"/api/v1/studies/{first}/complete", "viewer").status_code == 403
    unknown = env.post("/api/v1/studies/9.9.9/complete", "admin")
    assert (unknown.status_code, unknown.json()) == (404, {"detail": "no study 9.9.9"})
    for study in env.studies:
        done = env.post(f"/api/v1/studies/{study.study_uid}/complete", "admin")
        assert done.status_code == 200, done.text
        assert done.json()["by"] == "admin"

    def held() -> list[dict[str, Any]] | None:
        failed = env.get("/api/v1/jobs", state="failed").json()
        assert failed == [], [j["error"] for j in failed]
        queue = env.get("/api/v1/outputs", state="awaiting_review").json()
        return queue if len(queue) == 2 else None

    wait_until(held, 60, what="both studies routed, synthesized and held for review")
    with env.node.db.session() as session:
        forced = session.scalars(
            select(AuditEvent).where(AuditEvent.kind == "study.forced_complete")
        ).all()
        assert sorted(e.study_uid or "" for e in forced) == sorted(s.study_uid for s in env.studies)
        assert {e.detail["by"] for e in forced} == {"admin"}
    again = env.post(f"/api/v1/studies/{first}/complete", "admin")
    assert again.status_code == 409
    assert again.json() == {
        "detail": f"study {first} is routed, not receiving: nothing to complete"
    }


def test_a_study_in_detail(env: Env) -> None:
    study = env.studies[0]
    detail = env.get(f"/api/v1/studies/{study.study_uid}").json()
    assert detail["state"] == "routed"
    source = next(s for s in detail["series"] if s["modality"] == "MR")
    assert source["roles"] == ["T1"] and source["instances"] == SLICES
    (job,) = detail["jobs"]
    assert (job["model"], job["state"]) == ("mr-t1-to-ct", "done")
    (output,) = detail["outputs"]
    assert output["state"] == "awaiting_review"
    assert output["review"]["status"] == "awaiting"
    missing = env.get("/api/v1/studies/9.9.9")
    assert (missing.status_code, missing.json()) == (404, {"detail": "no study 9.9.9"})


def test_jobs_show_their_progress_through_both_passes(env: Env) -> None:
    jobs = env.get("/api/v1/jobs").json()
    assert len(jobs) == 2
    for job in jobs:
        # the route asks for uncertainty: test-time augmentation runs every slice twice
        assert (job["slices_done"], job["slices_total"]) == (2 * SLICES, 2 * SLICES)
    assert len(env.get("/api/v1/jobs", state="done").json()) == 2
    assert env.get("/api/v1/jobs", state="failed").json() == []
    assert env.get("/api/v1/jobs", state="finished").status_code == 422


def test_an_output_says_its_slices_and_its_provenance_is_the_files_record(env: Env) -> None:
    output = env.output_of(env.studies[0])
    item = env.get(f"/api/v1/outputs/{output['id']}").json()
    assert (item["instances"], item["slices"]) == (SLICES, SLICES)
    provenance = env.get(f"/api/v1/outputs/{output['id']}/provenance").json()
    with env.node.db.session() as session:
        keys = session.scalars(
            select(Instance.spool_key)
            .join(Series)
            .where(Series.series_uid == output["series_instance_uid"])
        ).all()
    assert len(keys) == SLICES
    for key in keys:
        record = read_private_block(pydicom.dcmread(env.node.spool.path(key)))
        assert record is not None
        assert json.loads(record.canonical_json()) == provenance
    assert env.get("/api/v1/outputs/999999").status_code == 404


def _png(answer: httpx.Response) -> np.ndarray:
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "image/png"
    assert answer.content[:8] == b"\x89PNG\r\n\x1a\n"
    image = Image.open(io.BytesIO(answer.content))
    assert image.mode == "L"
    return np.asarray(image)


def test_preview_is_three_panels_of_the_slice(env: Env) -> None:
    output_id = env.output_of(env.studies[0])["id"]
    path = f"/api/v1/outputs/{output_id}/preview.png"
    brain = _png(env.get(path, slice=3))
    assert brain.shape == (ROWS, 3 * COLS)
    source, synthetic, difference = np.split(brain.astype(int), 3, axis=1)
    assert len(np.unique(source)) > 10, "the MR in its percentile window"
    assert len(np.unique(synthetic)) > 10, "HU 0-80 of the synthetic CT in the brain window"
    assert not np.array_equal(source, synthetic)
    assert np.abs(difference - (128 + (synthetic - source) / 2)).max() <= 1
    bone = _png(env.get(path, slice=3, window="bone"))
    assert np.array_equal(bone[:, :COLS], brain[:, :COLS]), "an MR source ignores the CT window"
    assert not np.array_equal(bone[:, COLS : 2 * COLS], brain[:, COLS : 2 * COLS])
    assert not np.array_equal(_png(env.get(path, slice=0)), brain)
    assert _png(env.get(path)).shape == brain.shape  # the middle slice
    for outside in (SLICES, -1):
        refused = env.get(path, slice=outside)
        assert refused.status_code == 422
        assert refused.json() == {
            "detail": f"output {output_id} has slices 0 to {SLICES - 1}; no slice {outside}"
        }
    assert env.get(path, window="lung").status_code == 422
    missing = env.get("/api/v1/outputs/999999/preview.png")
    assert (missing.status_code, missing.json()) == (404, {"detail": "no output 999999"})


def test_models_show_their_cards(env: Env) -> None:
    answer = env.get("/api/v1/models").json()
    (model,) = answer["models"]
    card = linear_card()
    assert (model["id"], model["version"], model["inputs"]) == (card.id, card.version, ["T1"])
    assert model["output"] == {"role": "CT", "modality": "CT", "units": "HU"}
    assert model["intended_use"] == card.intended_use
    assert model["guard"] == "no input guard"
    assert model["validation"] == {}
    assert answer["refused"] == []


def test_destinations_and_a_real_echo(env: Env) -> None:
    listed = env.get("/api/v1/destinations").json()
    assert [(d["name"], d["routes"]) for d in listed] == [
        ("pacs", ["mr-t1-to-ct"]),
        ("closed", []),
    ]
    ok = env.post("/api/v1/destinations/pacs/echo", "reviewer").json()
    assert (ok["ok"], ok["status"], ok["error"]) == (True, 0, None)
    assert ok["ms"] > 0
    failed = env.post("/api/v1/destinations/closed/echo", "admin").json()
    assert (failed["ok"], failed["status"]) == (False, None)
    assert failed["error"].startswith("no association with NOBODY@127.0.0.1:")
    assert "cannot connect" in failed["error"]
    assert env.post("/api/v1/destinations/pacs/echo", "viewer").status_code == 403
    missing = env.post("/api/v1/destinations/nowhere/echo", "admin")
    assert (missing.status_code, missing.json()) == (
        404,
        {"detail": "no destination named 'nowhere'"},
    )


def _ct_instances(pacs: Orthanc, study: StudySpec) -> int:
    series = [
        s
        for s in pacs.series_of_study(study.study_uid)
        if s["MainDicomTags"].get("Modality") == "CT"
    ]
    return sum(len(s["Instances"]) for s in series)


def _deliveries(env: Env, output_id: int) -> list[tuple[DeliveryState, int]]:
    with env.node.db.session() as session:
        rows = session.scalars(select(Delivery).where(Delivery.output_series_id == output_id))
        return [(d.state, d.attempts) for d in rows]


def test_the_review_cycle(env: Env) -> None:
    approved_study, rejected_study = env.studies
    approved = env.output_of(approved_study)["id"]
    rejected = env.output_of(rejected_study)["id"]
    assert env.post(f"/api/v1/outputs/{approved}/approve", "viewer", {}).status_code == 403
    answer = env.post(f"/api/v1/outputs/{rejected}/reject", "viewer", {"reason": "x"})
    assert (answer.status_code, answer.json()) == (
        403,
        {"detail": "viewer is a viewer; needs reviewer"},
    )
    for body in ({}, {"reason": ""}, {"reason": "   "}, None):
        answer = env.post(f"/api/v1/outputs/{rejected}/reject", "reviewer", body)
        assert answer.status_code == 422, body

    refused = env.post(f"/api/v1/outputs/{rejected}/reject", "reviewer", {"reason": "artefact"})
    assert refused.status_code == 200 and refused.json()["state"] == "rejected"
    assert refused.json()["review"]["reason"] == "artefact"
    again = env.post(f"/api/v1/outputs/{rejected}/approve", "reviewer", {})
    assert again.status_code == 409
    assert "is rejected, not awaiting review" in again.json()["detail"]

    yes = env.post(f"/api/v1/outputs/{approved}/approve", "reviewer", {"comment": "lines up"})
    assert yes.status_code == 200 and yes.json()["review"]["reviewer"] == "reviewer"
    twice = env.post(f"/api/v1/outputs/{approved}/approve", "admin", {})
    assert twice.status_code == 409
    assert "not awaiting review" in twice.json()["detail"]

    wait_until(
        lambda: env.get(f"/api/v1/outputs/{approved}").json()["state"] == "delivered",
        60,
        what="the approved output delivered",
    )
    assert _ct_instances(env.pacs, approved_study) == SLICES
    assert _deliveries(env, approved) == [(DeliveryState.DONE, 1)], "sent exactly once"
    assert _ct_instances(env.pacs, rejected_study) == 0
    assert _deliveries(env, rejected) == []
    outbox = env.get("/api/v1/outbox").json()
    assert [(d["destination"], d["state"], d["series_state"]) for d in outbox] == [
        ("pacs", "done", "delivered")
    ]


def test_resend_and_retry(env: Env) -> None:
    approved = env.output_of(env.studies[0])["id"]
    rejected = env.output_of(env.studies[1])["id"]
    assert env.post(f"/api/v1/outputs/{approved}/resend", "reviewer").status_code == 403
    never = env.post(f"/api/v1/outputs/{rejected}/resend", "admin")
    assert never.status_code == 409
    assert "is rejected: only a released or delivered series is sent again" in never.text
    nowhere = env.post(f"/api/v1/outputs/{approved}/resend", "admin", {"to": "nowhere"})
    assert (nowhere.status_code, nowhere.json()) == (
        422,
        {"detail": "no destination named 'nowhere' in the configuration"},
    )
    sent = env.post(f"/api/v1/outputs/{approved}/resend", "admin", {"to": "pacs"})
    assert sent.json()["queued_for"] == ["pacs"]
    wait_until(
        lambda: (
            _deliveries(env, approved) == [(DeliveryState.DONE, 1)]
            and env.get(f"/api/v1/outputs/{approved}").json()["state"] == "delivered"
        ),
        60,
        what="the resend delivered",
    )
    (delivery,) = env.get("/api/v1/outbox").json()
    assert env.get("/api/v1/outbox", state="done").json() == [delivery]
    assert env.get("/api/v1/outbox", state="parked").json() == []
    assert env.get("/api/v1/outbox", state="lost").status_code == 422
    assert env.post(f"/api/v1/outbox/{delivery['id']}/retry", "reviewer").status_code == 403
    assert env.post("/api/v1/outbox/999999/retry", "admin").status_code == 404
    retried = env.post(f"/api/v1/outbox/{delivery['id']}/retry", "admin")
    assert retried.json() == {"id": delivery["id"], "state": "pending"}
    wait_until(
        lambda: env.get(f"/api/v1/outputs/{approved}").json()["state"] == "delivered",
        60,
        what="the retried delivery done",
    )
    assert _ct_instances(env.pacs, env.studies[0]) == SLICES
    with env.node.db.session() as session:
        states = set(session.scalars(select(OutputSeries.state)))
    assert {s.value for s in states} == {"delivered", "rejected"}


def test_openapi_lists_every_endpoint(env: Env) -> None:
    with env.client() as c:
        document = c.get("/api/v1/openapi.json").json()
    listed = {
        (method.upper(), path)
        for path, operations in document["paths"].items()
        for method in operations
    }
    assert {*PROTECTED, ("GET", "/health")} <= listed
