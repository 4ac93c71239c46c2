"""DICOM TLS (PS3.15 B.9, secure transport with BCP 195 ciphers): contexts for the
listening AE and for sending to a destination, from the configured PEM files."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from pathlib import Path

from dicom_node.config import ClientTLS, Destination, ServerTLS

Resolve = Callable[[Path], Path]
TLSArgs = tuple[ssl.SSLContext, str]
"""What pynetdicom's ``associate(tls_args=…)`` takes: a context and the server name."""


def _hardened(context: ssl.SSLContext) -> ssl.SSLContext:
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def server_context(tls: ServerTLS, resolve: Resolve) -> ssl.SSLContext:
    """The listening AE's context; with ``require_client_certificate`` a peer without a
    certificate from ``ca`` cannot complete the handshake."""
    context = _hardened(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
    context.load_cert_chain(resolve(tls.certificate), resolve(tls.key))
    if tls.ca is not None:
        context.load_verify_locations(cafile=resolve(tls.ca))
        context.verify_mode = (
            ssl.CERT_REQUIRED if tls.require_client_certificate else ssl.CERT_OPTIONAL
        )
    return context


def client_context(tls: ClientTLS, host: str, resolve: Resolve) -> TLSArgs:
    """The context and server name for sending to a destination; its certificate must
    chain to ``ca`` and name ``server_name`` (default: the destination's host)."""
    context = _hardened(ssl.create_default_context(cafile=resolve(tls.ca)))
    if tls.certificate is not None and tls.key is not None:
        context.load_cert_chain(resolve(tls.certificate), resolve(tls.key))
    return context, tls.server_name or host


def tls_args(destination: Destination, resolve: Resolve) -> TLSArgs | None:
    """TLS for sending to ``destination``, or None for plain TCP."""
    if destination.tls is None:
        return None
    return client_context(destination.tls, destination.host, resolve)
