"""Rendering a dashboard page: the template, the signed-in user, and the headers that
keep the page to its own scripts and styles and out of other sites' frames."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse

from dicom_node import __version__
from dicom_node.api.signin import Visitor, templates

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
    "frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def render(
    request: Request, user: Visitor | None, template: str, status: int = 200, **values: Any
) -> HTMLResponse:
    """``template`` with ``values``, the user (None on the sign-in page), their CSRF
    token and the node's version."""
    return templates.TemplateResponse(
        request,
        template,
        {"user": user, "csrf": user.csrf if user else "", "version": __version__, **values},
        status_code=status,
        headers=SECURITY_HEADERS,
    )
