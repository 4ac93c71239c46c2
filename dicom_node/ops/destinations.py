"""The configured destinations, and a C-ECHO to one of them as the node itself would
call it (its calling AE title, its TLS settings), for an operator checking a link."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dicom_node.config import Config, Destination
from dicom_node.dicom.status import VerificationStatus
from dicom_node.net.ae import UNCOMPRESSED, VERIFICATION, AssociationError, associate
from dicom_node.net.tls import tls_args

ECHO_TIMEOUT_S = 10.0
"""An echo that takes longer than this is a failed one: a person is waiting for it."""


def list_destinations(config: Config) -> list[dict[str, Any]]:
    """Every destination in the configuration, with the routes that send to it."""
    return [
        {
            "name": d.name,
            "type": d.type,
            "ae_title": d.ae_title,
            "host": d.host,
            "port": d.port,
            "tls": d.tls is not None,
            "routes": [r.model for r in config.routes if d.name in r.send_to],
        }
        for d in config.destinations
    ]


def echo(
    destination: Destination,
    calling_ae: str,
    resolve: Callable[[Path], Path],
    timeout_s: float = ECHO_TIMEOUT_S,
) -> dict[str, Any]:
    """A real C-ECHO to ``destination``: ``ok``, the DIMSE ``status`` (None when no
    association was made), the round trip in ``ms`` (association, echo and release) and
    the ``error`` text when it failed."""
    started = time.monotonic()

    def result(ok: bool, status: int | None, error: str | None) -> dict[str, Any]:
        return {
            "destination": destination.name,
            "ok": ok,
            "status": status,
            "ms": round((time.monotonic() - started) * 1000, 1),
            "error": error,
        }

    try:
        assoc = associate(
            destination,
            calling_ae,
            [(VERIFICATION, UNCOMPRESSED)],
            timeout_s=timeout_s,
            tls=tls_args(destination, resolve),
        )
    except (AssociationError, OSError) as exc:
        where = f"{destination.ae_title}@{destination.host}:{destination.port}"
        return result(False, None, f"no association with {where}: {exc}")
    try:
        answer = assoc.send_c_echo()
    finally:
        assoc.release()
    code = int(getattr(answer, "Status", -1))
    if code == VerificationStatus.SUCCESS:
        return result(True, code, None)
    text = "no response (timeout or aborted)" if code == -1 else f"status 0x{code:04X}"
    return result(False, code if code != -1 else None, f"C-ECHO failed: {text}")
