"""Who a request acts for, and whether they may.

The API takes ``Authorization: Bearer TOKEN``. The dashboard's session cookie is taken
too, but only for reading (GET and HEAD): the dashboard's pages fetch previews and
progress with it, and every change a signed-in user makes goes through a form that
carries the session's CSRF token (:func:`check_csrf`). No credentials: 401; a role that
may not act: 403.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable

from fastapi import HTTPException, Request

from dicom_node.api.context import WebContext
from dicom_node.ops.accounts import Principal, principal_for_token, session_principal
from storage.models import Role

SESSION_COOKIE = "dicomnode_session"
SAFE_METHODS = frozenset({"GET", "HEAD"})


def context(request: Request) -> WebContext:
    """The node's database, spool, configuration and clock, as the app was built with."""
    ctx: WebContext = request.app.state.context
    return ctx


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def current_principal(request: Request) -> Principal | None:
    """The user of the request's bearer token, or (for reading) of its session cookie;
    None without valid credentials."""
    ctx = context(request)
    token = _bearer(request)
    with ctx.db.session() as session:
        if token is not None:
            return principal_for_token(session, token, ctx.clock())
        secret = request.cookies.get(SESSION_COOKIE)
        if secret and request.method in SAFE_METHODS:
            found = session_principal(session, secret, ctx.clock())
            return found[0] if found else None
    return None


def require(role: Role) -> Callable[[Request], Principal]:
    """A FastAPI dependency: the request's user, who must hold ``role`` (or higher)."""

    def dependency(request: Request) -> Principal:
        principal = current_principal(request)
        if principal is None:
            raise HTTPException(
                401, "authentication required", headers={"WWW-Authenticate": "Bearer"}
            )
        if not principal.may(role):
            raise HTTPException(403, f"{principal.name} is a {principal.role}; needs {role}")
        request.state.principal = principal
        return principal

    return dependency


def check_csrf(expected: str, given: str | None) -> None:
    """A form's CSRF token must be the session's; 403 otherwise."""
    if not given or not hmac.compare_digest(expected, given):
        raise HTTPException(403, "the form's CSRF token is missing or stale: reload the page")
