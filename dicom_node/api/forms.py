"""The dashboard's forms: signing in and out, and the actions a reviewer or an admin
takes. Every form posts its CSRF token; every action checks the role on the server,
whatever buttons the page showed; every answer is a redirect back to a page."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.orm import Session

from dicom_node.api.auth import SESSION_COOKIE, check_csrf, context
from dicom_node.api.rendering import render
from dicom_node.api.signin import (
    LOGIN_CSRF_COOKIE,
    Visitor,
    form_visitor,
    safe_next,
    set_login_token,
    set_session_cookie,
    visitor,
)
from dicom_node.api.throttle import SignInThrottle
from dicom_node.ops import destinations, outbox, review, studies
from dicom_node.ops.accounts import check_password, close_session, open_session
from storage.models import OutputSeries, Role

router = APIRouter(include_in_schema=False)
Signed = Annotated[Visitor, Depends(form_visitor(Role.VIEWER))]
Reviewer = Annotated[Visitor, Depends(form_visitor(Role.REVIEWER))]
Admin = Annotated[Visitor, Depends(form_visitor(Role.ADMIN))]
Text = Annotated[str, Form(max_length=2000)]
Decide = Callable[[Session, datetime], object]


def _secure(request: Request) -> bool:
    return context(request).config.api.tls is not None


def back(path: str) -> RedirectResponse:
    """After a form: the page to show, fetched anew (POST-redirect-GET)."""
    return RedirectResponse(path, status_code=303)


def _login_page(request: Request, next_path: str, error: str | None, status: int) -> Response:
    token = secrets.token_urlsafe(32)
    response = render(
        request, None, "login.html", status, next=next_path, error=error, login_csrf=token
    )
    set_login_token(response, token, _secure(request))
    return response


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request, next: str | None = None) -> Response:
    """The sign-in form; a signed-in user goes straight on."""
    if visitor(request) is not None:
        return back(safe_next(next))
    return _login_page(request, safe_next(next), None, 200)


@router.post("/login")
def login(
    request: Request,
    username: Annotated[str, Form(max_length=64)],
    password: Annotated[str, Form(max_length=1024)],
    csrf: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = "/",
) -> Response:
    """Checks the password and opens a session; the same answer for any failure, and
    429 once this address has failed too often for this user name (api.throttle)."""
    check_csrf(request.cookies.get(LOGIN_CSRF_COOKIE, ""), csrf)
    ctx = context(request)
    throttle: SignInThrottle = request.app.state.sign_in_throttle
    address = request.client.host if request.client else ""
    hours = ctx.config.api.session_hours
    now = ctx.clock()
    with ctx.db.session() as session:
        wait = throttle.wait(session, address, username, now)
        if wait > timedelta(0):
            minutes = max(1, round(wait.total_seconds() / 60))
            error = f"Too many failed sign-ins for this user name: try again in {minutes} min."
            return _login_page(request, safe_next(next), error, 429)
        principal = check_password(session, username, password)
        if principal is None:
            throttle.failed(session, address, username, now)
            return _login_page(request, safe_next(next), "Wrong user name or password.", 401)
        throttle.succeeded(session, address, username)
        secret, _ = open_session(session, principal, now, timedelta(hours=hours))
    request.state.principal = principal
    response = back(safe_next(next))
    set_session_cookie(response, secret, timedelta(hours=hours), _secure(request))
    return response


@router.post("/logout")
def logout(request: Request, _user: Signed) -> Response:
    """Ends the session on the server, not only in the browser."""
    ctx = context(request)
    with ctx.db.session() as session:
        close_session(session, request.cookies.get(SESSION_COOKIE, ""))
    response = back("/login")
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


def _output(request: Request, output_id: int) -> OutputSeries:
    with context(request).db.session() as session:
        output = session.get(OutputSeries, output_id)
        if output is None:
            raise HTTPException(404, f"no output {output_id}")
        session.expunge(output)
        return output


def _decided(request: Request, study_uid: str, act: Decide) -> Response:
    ctx = context(request)
    try:
        with ctx.db.session() as session:
            act(session, ctx.clock())
    except review.NotAwaitingReview as exc:
        raise HTTPException(409, str(exc)) from exc
    except review.ReviewRefused as exc:
        raise HTTPException(422, str(exc)) from exc
    return back(f"/studies/{study_uid}")


@router.post("/outputs/{output_id}/approve")
def approve(
    request: Request,
    user: Reviewer,
    output_id: int,
    version: Annotated[int | None, Form()] = None,
    comment: Text = "",
) -> Response:
    """Releases the output to its destinations, if it is still the version shown."""
    output = _output(request, output_id)
    name = user.principal.name
    return _decided(
        request,
        output.study_uid,
        lambda s, now: review.approve(
            s, output.series_uid, name, now, comment.strip() or None, version
        ),
    )


@router.post("/outputs/{output_id}/reject")
def reject(
    request: Request,
    user: Reviewer,
    output_id: int,
    version: Annotated[int | None, Form()] = None,
    reason: Text = "",
) -> Response:
    """Rejects the output (never sent); a reason is required."""
    output = _output(request, output_id)
    if not reason.strip():
        raise HTTPException(422, "a rejection needs a reason")
    name = user.principal.name
    return _decided(
        request,
        output.study_uid,
        lambda s, now: review.reject(s, output.series_uid, name, reason.strip(), now, version),
    )


@router.post("/deliveries/{delivery_id}/retry")
def retry(request: Request, _user: Admin, delivery_id: int) -> Response:
    """Queues one delivery again, attempts zeroed."""
    ctx = context(request)
    with ctx.db.session() as session:
        if not outbox.retry(session, delivery_id, ctx.clock()):
            raise HTTPException(409, f"delivery {delivery_id} is unknown or being sent")
    return back("/outbox")


@router.post("/outbox/resend")
def resend(
    request: Request,
    user: Admin,
    series_uid: Annotated[str, Form(max_length=64)],
    to: Annotated[str | None, Form(max_length=64)] = None,
) -> Response:
    """Sends a released or delivered output series again, to ``to`` or to every
    destination its route named."""
    ctx = context(request)
    names = [d.name for d in ctx.config.destinations]
    try:
        with ctx.db.session() as session:
            outbox.resend(
                session, series_uid, ctx.clock(), names, to or None, by=user.principal.name
            )
    except outbox.ResendRefused as exc:
        raise HTTPException(409, str(exc)) from exc
    return back("/outbox")


@router.post("/studies/{study_uid}/complete")
def force_complete(request: Request, user: Admin, study_uid: str) -> Response:
    """Routes a study still receiving now, instead of after its stable time."""
    ctx = context(request)
    try:
        with ctx.db.session() as session:
            studies.force_complete(
                session,
                study_uid,
                ctx.clock(),
                ctx.config.node.stable_seconds,
                user.principal.name,
            )
    except studies.StudyNotFound as exc:
        raise HTTPException(404, str(exc)) from exc
    except studies.NotReceiving as exc:
        raise HTTPException(409, str(exc)) from exc
    return back(f"/studies/{study_uid}")


@router.post("/destinations/{name}/echo")
def echo(request: Request, _user: Signed, name: str) -> Response:
    """A C-ECHO to a configured destination; the destinations page shows the answer."""
    ctx = context(request)
    destination = next((d for d in ctx.config.destinations if d.name == name), None)
    if destination is None:
        raise HTTPException(404, f"no destination {name}")
    result = destinations.echo(destination, ctx.config.node.ae_title, ctx.config.path)
    request.app.state.echo_results[name] = result | {"at": ctx.clock().isoformat()}
    return back("/destinations")
