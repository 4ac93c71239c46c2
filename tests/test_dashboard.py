"""The dashboard over HTTP: signing in and out, the session cookie's attributes, CSRF on
every form, roles checked on the server whatever the page showed, a rejection's reason,
pages behind sign-in, and an access log that never names the patient a page shows."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import write_config
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from dicom_node.api.app import create_app
from dicom_node.api.auth import SESSION_COOKIE
from dicom_node.api.context import WebContext
from dicom_node.config import load_config
from dicom_node.dispatch.outbox import Outbox
from dicom_node.obs.logs import JsonFormatter
from dicom_node.ops.accounts import add_user
from peers import free_port
from storage.database import Database
from storage.models import (
    AuditEvent,
    Job,
    JobState,
    OutputSeries,
    OutputState,
    Role,
    Series,
    SignInFailure,
    Study,
    StudyState,
)
from storage.spool import Spool

NOW = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
STUDY_UID = "1.2.3.4"
SERIES_UID = "1.2.3.4.9003"
PATIENT = "Doe^Jane^Q"
PASSWORD = "correct horse battery"


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[WebContext]:
    """A node's database with a study whose synthetic CT awaits review, and one user of
    each role."""
    overrides = {
        "storage": {"database_url": "sqlite:///node.db"},
        "destinations": [
            {"name": "pacs", "ae_title": "PACS", "host": "127.0.0.1", "port": free_port()}
        ],
    }
    config = load_config(write_config(tmp_path, overrides))
    db = Database(config.database_url)
    with db.session() as session:
        study = Study(
            study_uid=STUDY_UID,
            first_received_at=NOW,
            last_received_at=NOW,
            patient_name=PATIENT,
            patient_id="PID-77",
        )
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
        session.add_all([job, Series(study=study, series_uid=SERIES_UID, modality="CT")])
        session.flush()
        session.add(
            OutputSeries(
                job_id=job.id,
                study_uid=STUDY_UID,
                series_uid=SERIES_UID,
                sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
                spool_key="outputs/x",
                instance_count=4,
                model_key="mr-t1-to-ct@1.0.0",
                provenance={"model": "mr-t1-to-ct"},
                created_at=NOW,
                send_to=["pacs"],
            )
        )
        for name, role in [("vera", Role.VIEWER), ("rita", Role.REVIEWER), ("adam", Role.ADMIN)]:
            add_user(session, name, role, PASSWORD, NOW)
    assert Outbox(db, lambda: NOW, reviewed=["mr-t1-to-ct"]).run_once()
    yield WebContext(config, db, Spool(tmp_path / "spool"), lambda: NOW)
    db.dispose()


@pytest.fixture
def client(ctx: WebContext) -> Iterator[TestClient]:
    with TestClient(create_app(ctx), follow_redirects=False) as c:
        yield c


def _hidden(page: str, name: str) -> str:
    found = re.search(rf'name="{name}" value="([^"]*)"', page)
    assert found, f"no hidden {name} in the page"
    return found.group(1)


def sign_in(client: TestClient, name: str) -> str:
    """Signs ``name`` in through the form; the session's CSRF token, from a page."""
    form = client.get("/login")
    answer = client.post(
        "/login",
        data={"username": name, "password": PASSWORD, "csrf": _hidden(form.text, "csrf")},
    )
    assert answer.status_code == 303, answer.text
    return _hidden(client.get("/review").text, "csrf")


def _output_id(ctx: WebContext) -> int:
    with ctx.db.session() as session:
        return session.scalars(select(OutputSeries.id)).one()


def _state(ctx: WebContext) -> OutputState:
    with ctx.db.session() as session:
        return session.scalars(select(OutputSeries.state)).one()


def test_sign_in_sets_an_httponly_samesite_session_cookie(client: TestClient) -> None:
    form = client.get("/login")
    assert form.status_code == 200
    answer = client.post(
        "/login",
        data={
            "username": "rita",
            "password": PASSWORD,
            "csrf": _hidden(form.text, "csrf"),
            "next": "/review",
        },
    )
    assert (answer.status_code, answer.headers["location"]) == (303, "/review")
    (cookie,) = [c for c in answer.headers.get_list("set-cookie") if c.startswith(SESSION_COOKIE)]
    attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")}
    assert {"httponly", "path", "max-age"} <= attributes
    assert "samesite=strict" in cookie.lower() and "max-age=43200" in cookie.lower()
    assert "secure" not in attributes  # no TLS configured: a Secure cookie would never return
    page = client.get("/review")
    assert page.status_code == 200 and "rita" in page.text and "reviewer" in page.text


def test_sign_in_refuses_a_wrong_password_and_a_missing_login_token(client: TestClient) -> None:
    form = client.get("/login")
    token = _hidden(form.text, "csrf")
    wrong = client.post("/login", data={"username": "rita", "password": "nope", "csrf": token})
    assert wrong.status_code == 401 and "Wrong user name or password" in wrong.text
    assert SESSION_COOKIE not in wrong.headers.get("set-cookie", "")
    client.cookies.clear()  # a forged cross-site post carries no login cookie
    forged = client.post("/login", data={"username": "rita", "password": PASSWORD, "csrf": token})
    assert forged.status_code == 403


def test_sign_in_goes_back_only_to_a_path_of_this_site(client: TestClient) -> None:
    form = client.get("/login?next=//evil.example/x")
    assert _hidden(form.text, "next") == "/"


def test_pages_need_a_session_and_progress_answers_401(client: TestClient) -> None:
    for path in ["/", "/review", "/outbox", "/models", "/destinations", f"/studies/{STUDY_UID}"]:
        answer = client.get(path)
        assert answer.status_code == 303, path
        assert answer.headers["location"].startswith("/login?next=/"), path
    assert client.get(f"/studies/{STUDY_UID}/jobs.json").status_code == 401
    client.cookies.set(SESSION_COOKIE, "made-up")
    assert client.get("/").status_code == 303


def test_a_form_without_or_with_a_wrong_csrf_token_is_refused(
    client: TestClient, ctx: WebContext
) -> None:
    sign_in(client, "rita")
    approve = f"/outputs/{_output_id(ctx)}/approve"
    assert client.post(approve, data={}).status_code == 403
    assert client.post(approve, data={"csrf": "not-the-token"}).status_code == 403
    assert client.post("/logout", data={}).status_code == 403
    assert _state(ctx) == OutputState.AWAITING_REVIEW


def test_a_viewer_cannot_approve_even_with_a_crafted_form(
    client: TestClient, ctx: WebContext
) -> None:
    csrf = sign_in(client, "vera")
    study = client.get(f"/studies/{STUDY_UID}")
    assert study.status_code == 200 and "Approve" not in study.text
    answer = client.post(f"/outputs/{_output_id(ctx)}/approve", data={"csrf": csrf})
    assert answer.status_code == 403
    answer = client.post(f"/outputs/{_output_id(ctx)}/reject", data={"csrf": csrf, "reason": "x"})
    assert answer.status_code == 403
    assert _state(ctx) == OutputState.AWAITING_REVIEW


def test_a_reviewer_rejects_only_with_a_reason_and_may_not_force_or_resend(
    client: TestClient, ctx: WebContext
) -> None:
    csrf = sign_in(client, "rita")
    study = client.get(f"/studies/{STUDY_UID}")
    assert "Approve and send" in study.text and "Force completion" not in study.text
    reject = f"/outputs/{_output_id(ctx)}/reject"
    assert client.post(reject, data={"csrf": csrf, "reason": "   "}).status_code == 422
    assert _state(ctx) == OutputState.AWAITING_REVIEW
    assert client.post(f"/studies/{STUDY_UID}/complete", data={"csrf": csrf}).status_code == 403
    resend = {"csrf": csrf, "series_uid": SERIES_UID}
    assert client.post("/outbox/resend", data=resend).status_code == 403
    answer = client.post(reject, data={"csrf": csrf, "reason": "bone in the sinus"})
    assert (answer.status_code, answer.headers["location"]) == (303, f"/studies/{STUDY_UID}")
    assert _state(ctx) == OutputState.REJECTED
    assert "bone in the sinus" in client.get(f"/studies/{STUDY_UID}").text


def test_an_approval_names_the_version_shown(client: TestClient, ctx: WebContext) -> None:
    csrf = sign_in(client, "rita")
    page = client.get(f"/studies/{STUDY_UID}").text
    version = _hidden(page, "version")
    assert "held for review at 20" in page and f"version {version}" not in page
    stale = {"csrf": csrf, "version": str(int(version) + 1)}
    approve = f"/outputs/{_output_id(ctx)}/approve"
    assert client.post(approve, data=stale).status_code == 409
    answer = client.post(approve, data={"csrf": csrf, "version": version, "comment": "fine"})
    assert answer.status_code == 303
    assert _state(ctx) == OutputState.RELEASED


def test_the_access_log_never_names_the_patient_a_page_shows(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    sign_in(client, "rita")
    with caplog.at_level(logging.INFO):
        page = client.get(f"/studies/{STUDY_UID}?q={PATIENT}")
        queue = client.get(f"/review?patient={PATIENT}")
    assert "Doe^Jane^Q" in page.text and "Doe^Jane^Q" in queue.text
    lines = [JsonFormatter().format(r) for r in caplog.records if r.getMessage() == "http.request"]
    assert len(lines) == 2
    assert all('"user": "rita"' in line for line in lines)
    assert not [line for line in lines if "Doe" in line or "PID-77" in line or "q=" in line]


def test_sign_out_ends_the_session_on_the_server(client: TestClient) -> None:
    csrf = sign_in(client, "rita")
    secret = client.cookies[SESSION_COOKIE]
    answer = client.post("/logout", data={"csrf": csrf})
    assert (answer.status_code, answer.headers["location"]) == (303, "/login")
    client.cookies.set(SESSION_COOKIE, secret)  # the old cookie, replayed
    assert client.get("/review").status_code == 303
    assert client.get(f"/studies/{STUDY_UID}/jobs.json").status_code == 401


def test_pages_escape_what_they_show(client: TestClient, ctx: WebContext) -> None:
    with ctx.db.session() as session:
        study = session.scalars(select(Study)).one()
        study.patient_name = "<script>alert(1)</script>"
    sign_in(client, "rita")
    page = client.get("/")
    assert "<script>alert(1)</script>" not in page.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
    assert "script-src" not in page.headers["content-security-policy"]
    assert page.headers["content-security-policy"].startswith("default-src 'self'")


def test_an_admin_forces_completion_and_echoes_a_destination(
    client: TestClient, ctx: WebContext
) -> None:
    csrf = sign_in(client, "adam")
    assert "Force completion" in client.get(f"/studies/{STUDY_UID}").text
    answer = client.post(f"/studies/{STUDY_UID}/complete", data={"csrf": csrf})
    assert (answer.status_code, answer.headers["location"]) == (303, f"/studies/{STUDY_UID}")
    with ctx.db.session() as session:
        study = session.scalars(select(Study)).one()
        assert study.state == StudyState.RECEIVING  # the route stage routes it on its tick
        assert study.last_received_at < NOW
        event = session.scalars(select(AuditEvent).where(AuditEvent.kind.like("study.%"))).one()
        assert event.detail["by"] == "adam"
    resend = {"csrf": csrf, "series_uid": SERIES_UID}
    assert client.post("/outbox/resend", data=resend).status_code == 409  # awaits review
    assert "not tried" in client.get("/destinations").text
    assert client.post("/destinations/pacs/echo", data={"csrf": csrf}).status_code == 303
    page = client.get("/destinations").text
    assert "failed" in page and "no association" in page


def test_every_table_header_says_what_it_heads_to_a_screen_reader(
    client: TestClient, ctx: WebContext
) -> None:
    """Column headers carry ``scope="col"`` (row headers ``scope="row"``) and a name,
    an action column's name hidden from sight but not from assistive technology."""
    csrf = sign_in(client, "adam")
    pages = ["/", f"/studies/{STUDY_UID}", "/review", "/models", "/destinations"]
    version = _hidden(client.get(pages[1]).text, "version")
    approve = {"csrf": csrf, "version": version, "comment": "fine"}
    pages.append("/outbox")
    headers = []
    for path in pages:
        if path == "/outbox":
            assert client.post(f"/outputs/{_output_id(ctx)}/approve", data=approve).is_redirect
        page = client.get(path)
        assert page.status_code == 200, path
        assert path != "/outbox" or 'id="deliveries"' in page.text
        headers += [(path, *h) for h in re.findall(r"<th(\s[^>]*)?>(.*?)</th>", page.text, re.S)]
    assert len(headers) > 30
    for path, attributes, content in headers:
        assert re.search(r'scope="(col|row)"', attributes), (path, attributes, content)
        assert re.sub(r"<[^>]+>", "", content).strip(), (path, "a header without a name")


def test_repeated_failed_sign_ins_are_refused_for_a_while_then_the_right_password_is_too(
    client: TestClient,
) -> None:
    """Five wrong passwords for one user name from one address: the sixth try is refused
    (429) without its password being checked, the right one included; another user name
    from the same address is not held up."""
    page = client.get("/login").text
    for _ in range(5):
        data = {"username": "rita", "password": "x", "csrf": _hidden(page, "csrf")}
        wrong = client.post("/login", data=data)
        assert wrong.status_code == 401
        page = wrong.text
    data = {"username": "rita", "password": PASSWORD, "csrf": _hidden(page, "csrf")}
    held = client.post("/login", data=data)
    assert held.status_code == 429 and "Too many failed sign-ins" in held.text
    data = {"username": "vera", "password": PASSWORD, "csrf": _hidden(held.text, "csrf")}
    assert client.post("/login", data=data).status_code == 303


def test_failed_sign_ins_count_on_every_node_of_one_database_until_the_window_passes(
    ctx: WebContext,
) -> None:
    """Behind a load balancer a guesser meets several nodes, and a node restarts: the
    failures are counted in the database, so three on one node and two on another hold
    the pair on both, and a new process still holds it; fifteen minutes after the oldest
    failure the right password gets in again."""

    def attempt(c: TestClient, password: str) -> int:
        """A wrong password typed as "Rita", the right one as "rita": one pair."""
        page = c.get("/login").text
        name = "rita" if password == PASSWORD else "Rita"
        data = {"username": name, "password": password, "csrf": _hidden(page, "csrf")}
        return c.post("/login", data=data).status_code

    now = [NOW]
    moving = replace(ctx, clock=lambda: now[0])
    with (
        TestClient(create_app(moving), follow_redirects=False) as one,
        TestClient(create_app(moving), follow_redirects=False) as two,
    ):
        assert [attempt(one, "x") for _ in range(3)] == [401] * 3
        now[0] += timedelta(minutes=5)
        assert [attempt(two, "y") for _ in range(2)] == [401] * 2
        assert attempt(one, PASSWORD) == attempt(two, PASSWORD) == 429
    with TestClient(create_app(moving), follow_redirects=False) as restarted:
        now[0] += timedelta(minutes=9)
        assert attempt(restarted, PASSWORD) == 429
        now[0] += timedelta(minutes=1, seconds=1)
        assert attempt(restarted, "z") == 401, "the first three left the window"
        assert attempt(restarted, PASSWORD) == 303
    with ctx.db.session() as session:
        assert session.scalar(select(func.count()).select_from(SignInFailure)) == 0
