"""The dashboard: server-rendered pages at ``/`` with a small stylesheet and script, no
build step. :func:`install` adds its pages, forms, static files and error pages to the
app."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from dicom_node.api import forms, pages
from dicom_node.api.rendering import render
from dicom_node.api.signin import HERE, SignInNeeded, sign_in_url, visitor
from dicom_node.api.throttle import SignInThrottle


def install(app: FastAPI) -> None:
    """Serves the dashboard from ``app``."""
    app.state.evidence_cache = {}
    app.state.echo_results = {}
    app.state.sign_in_throttle = SignInThrottle()
    app.include_router(forms.router)
    app.include_router(pages.router)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    @app.exception_handler(SignInNeeded)
    async def sign_in(request: Request, exc: SignInNeeded) -> Response:
        return RedirectResponse(sign_in_url(exc.path), status_code=303)

    @app.exception_handler(StarletteHTTPException)
    async def error_page(request: Request, exc: StarletteHTTPException) -> Response:
        """The API answers errors in JSON; a person at the dashboard gets a page."""
        if request.url.path.startswith("/api/") or exc.headers:
            return await http_exception_handler(request, exc)
        return render(
            request,
            visitor(request),
            "error.html",
            exc.status_code,
            detail=exc.detail,
            code=exc.status_code,
        )
