"""Who is signed in to the dashboard, and the checks every page and form makes.

A sign-in is a session cookie (HttpOnly, SameSite=Strict, Secure over TLS) whose secret
the database knows only as a hash (dicom_node.ops.accounts). Pages need a signed-in user
and send others to the sign-in page; forms need the user's role and the session's CSRF
token in a hidden field. The sign-in form itself, which has no session yet, is guarded by
a double-submit token: a short-lived cookie that must match its hidden field.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from urllib.parse import quote

from fastapi import HTTPException, Request, Response
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, FileSystemLoader

from dicom_node.api.auth import SESSION_COOKIE, check_csrf, context
from dicom_node.ops.accounts import Principal, session_principal
from storage.models import Role

LOGIN_CSRF_COOKIE = "dicomnode_login_csrf"
LOGIN_CSRF_SECONDS = 15 * 60
HERE = Path(__file__).resolve().parent
templates = Jinja2Templates(
    env=Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=True)
)
"""Every value a template shows is HTML-escaped, whatever the file's name."""


@dataclass(frozen=True)
class Visitor:
    """A signed-in user of the dashboard and their session's CSRF token."""

    principal: Principal
    csrf: str

    def may(self, role: str) -> bool:
        """Whether the user holds ``role`` (a Role's value) or a higher one; templates
        show an action's button only when this is true."""
        return self.principal.may(Role(role))


class SignInNeeded(Exception):
    """A page was asked for without a valid session: the app answers with a redirect to
    the sign-in page, which comes back to ``path`` afterwards."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.path = path


def visitor(request: Request) -> Visitor | None:
    """The signed-in user of the request's session cookie, or None."""
    secret = request.cookies.get(SESSION_COOKIE)
    if not secret:
        return None
    ctx = context(request)
    with ctx.db.session() as session:
        found = session_principal(session, secret, ctx.clock())
    if found is None:
        return None
    request.state.principal = found[0]
    return Visitor(*found)


def page_visitor(request: Request) -> Visitor:
    """A dependency for pages: the signed-in user, or a redirect to the sign-in page."""
    found = visitor(request)
    if found is None:
        raise SignInNeeded(request.url.path)
    return found


def fragment_visitor(request: Request) -> Visitor:
    """A dependency for what pages fetch (progress): the signed-in user, or 401."""
    found = visitor(request)
    if found is None:
        raise HTTPException(401, "sign in first")
    return found


def form_visitor(role: Role) -> Callable[[Request], Awaitable[Visitor]]:
    """A dependency for forms: the signed-in user, who must hold ``role`` and whose form
    must carry the session's CSRF token (403 otherwise; 401 without a session)."""

    async def dependency(request: Request) -> Visitor:
        found = fragment_visitor(request)
        form = await request.form()
        given = form.get("csrf")
        check_csrf(found.csrf, given if isinstance(given, str) else None)
        if not found.principal.may(role):
            raise HTTPException(
                403, f"{found.principal.name} is a {found.principal.role}; needs {role}"
            )
        return found

    return dependency


def sign_in_url(path: str) -> str:
    """The sign-in page, coming back to ``path`` (a path of this site) afterwards."""
    return "/login?next=" + quote(path, safe="/")


def safe_next(path: str | None) -> str:
    """Where to go after signing in: a path of this site, never another site."""
    if not path or not path.startswith("/") or path.startswith("//") or "\\" in path:
        return "/"
    return path


def set_login_token(response: Response, token: str, secure: bool) -> None:
    """The sign-in form's double-submit token, set as its cookie too."""
    response.set_cookie(
        LOGIN_CSRF_COOKIE,
        token,
        max_age=LOGIN_CSRF_SECONDS,
        path="/login",
        httponly=True,
        samesite="strict",
        secure=secure,
    )


def set_session_cookie(response: Response, secret: str, lifetime: timedelta, secure: bool) -> None:
    """The session cookie: script cannot read it, other sites cannot send it."""
    response.set_cookie(
        SESSION_COOKIE,
        secret,
        max_age=int(lifetime.total_seconds()),
        path="/",
        httponly=True,
        samesite="strict",
        secure=secure,
    )
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/login")


def waited(seconds: int) -> str:
    """A wait as a reader takes it in: ``45 s``, ``12 min``, ``3 h 05 min``, ``2 d 4 h``."""
    if seconds < 60:
        return f"{seconds} s"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes:02d} min"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h"


templates.env.filters["waited"] = waited
