"""The HTTP application: health, the versioned REST API (with its OpenAPI document at
/api/v1/openapi.json) and the dashboard, over one :class:`WebContext`.

Every request is logged as one ``http.request`` line with its method, path (never the
query string, which may carry search terms such as a patient's name), status, user and
duration; the server's own access log is off.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request, Response

from dicom_node import __version__
from dicom_node.api import dashboard, routes_node, routes_outputs, routes_work
from dicom_node.api.auth import require
from dicom_node.api.context import WebContext
from dicom_node.obs.logs import emit, get_logger
from dicom_node.obs.metrics import exposition
from dicom_node.ops.models import model_cards
from dicom_node.ops.previews import PreviewCache
from storage.models import Role

log = get_logger("api")


def create_app(ctx: WebContext) -> FastAPI:
    """The application the ``api`` stage serves."""
    app = FastAPI(
        title="dicom-node",
        version=__version__,
        description="Review, watch and run a dicom-node. Authenticate with "
        "`Authorization: Bearer TOKEN` (`dicom-node tokens create NAME`).",
        openapi_url="/api/v1/openapi.json",
        docs_url="/api/v1/docs",
        redoc_url=None,
    )
    app.state.context = ctx
    app.state.previews = PreviewCache()
    app.state.models = model_cards(ctx.config.models_dir)

    @app.middleware("http")
    async def access_log(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        started = time.monotonic()
        response = await call_next(request)
        principal = getattr(request.state, "principal", None)
        emit(
            log,
            "http.request",
            method=request.method,
            path=request.url.path,
            status=response.status_code,
            user=principal.name if principal is not None else None,
            ms=round((time.monotonic() - started) * 1000, 1),
        )
        return response

    @app.get("/health", tags=["node"])
    def health() -> dict[str, str]:
        """Whether the node answers and its database is reachable; no authentication."""
        with ctx.db.session() as session:
            session.connection()
        return {"status": "ok", "version": __version__}

    def metrics(request: Request) -> Response:
        """Prometheus text format (docs/operations.md#metrics); with ``api.metrics_auth``
        a viewer's bearer token is needed."""
        if ctx.config.api.metrics_auth:
            require(Role.VIEWER)(request)
        body, content_type = exposition(ctx.db)
        return Response(body, media_type=content_type)

    app.add_api_route("/metrics", metrics, methods=["GET"], tags=["node"])
    app.include_router(routes_outputs.router)
    app.include_router(routes_work.router)
    app.include_router(routes_node.router)
    dashboard.install(app)
    return app
