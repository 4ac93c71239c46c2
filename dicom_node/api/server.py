"""The ``api`` stage: the HTTP application served by uvicorn in a thread of `serve`.

It binds its socket before it starts (so that a port already taken fails `serve` at
once, and port 0 picks a free one), serves HTTPS when ``api.tls`` names a certificate
and key, and on stop lets requests in flight finish.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time

import uvicorn

from dicom_node.api.app import create_app
from dicom_node.api.context import WebContext
from dicom_node.config import ApiSettings
from dicom_node.obs.logs import emit, get_logger

log = get_logger("api")


class ApiStage:
    """The REST API, the dashboard and /metrics, on ``api.host``:``api.port``."""

    name = "api"

    def __init__(self, ctx: WebContext) -> None:
        self.ctx = ctx
        self.settings: ApiSettings = ctx.config.api
        self.address: tuple[str, int] | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None

    def prepare(self) -> None:
        family = socket.AF_INET6 if ":" in self.settings.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.settings.host, self.settings.port))
        except OSError as exc:
            sock.close()
            raise OSError(
                f"api: cannot listen on {self.settings.host}:{self.settings.port}: {exc}"
            ) from exc
        sock.listen(128)
        self._socket = sock
        host, port = sock.getsockname()[:2]
        self.address = (str(host), int(port))

    def start(self) -> None:
        tls = self.settings.tls
        config = uvicorn.Config(
            create_app(self.ctx),
            log_config=None,
            access_log=False,
            lifespan="off",
            ssl_certfile=str(self.ctx.config.path(tls.certificate)) if tls else None,
            ssl_keyfile=str(self.ctx.config.path(tls.key)) if tls else None,
            ssl_version=ssl.PROTOCOL_TLS_SERVER,
        )
        server = uvicorn.Server(config)
        assert self._socket is not None, "prepare() binds the socket first"
        sockets = [self._socket]
        self._thread = threading.Thread(
            target=server.run, kwargs={"sockets": sockets}, name="api", daemon=True
        )
        self._server = server
        self._thread.start()
        while not server.started and self._thread.is_alive():
            time.sleep(0.02)
        scheme = "https" if tls else "http"
        host, port = self.address or ("?", 0)
        emit(log, "api.ready", url=f"{scheme}://{host}:{port}/")

    def stop(self, deadline: float) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=max(1.0, deadline - time.monotonic()))
        if self._socket is not None:
            self._socket.close()
