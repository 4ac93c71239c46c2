"""The api stage over HTTPS (``api.tls``): the API answers over TLS with the configured
certificate, plain HTTP gets no answer, and the dashboard's cookies are Secure."""

from __future__ import annotations

import re
import ssl
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from pki import CertificateAuthority

from dicom_node.ops.accounts import add_user, create_token
from dicom_node.runtime.node import Node
from peers import free_port
from storage.models import Role

PASSWORD = "correct horse battery"


def test_the_api_and_dashboard_are_served_over_tls_with_secure_cookies(
    tmp_path: Path, node_factory: Callable[..., Node]
) -> None:
    ca = CertificateAuthority(tmp_path / "pki", "api-ca")
    server = ca.issue("localhost")
    tls = {"certificate": str(server.certificate), "key": str(server.key)}
    node = node_factory({"api": {"host": "127.0.0.1", "port": free_port(), "tls": tls}})
    assert node.api_address is not None
    port = node.api_address[1]
    with node.db.session() as session:
        add_user(session, "rita", Role.REVIEWER, PASSWORD, datetime.now(UTC))
        _, token = create_token(session, "rita", "", datetime.now(UTC))
    verify = ssl.create_default_context(cafile=str(ca.certificate))
    with httpx.Client(base_url=f"https://127.0.0.1:{port}", verify=verify) as client:
        assert client.get("/health").json()["status"] == "ok"
        me = client.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"})
        assert me.status_code == 200 and me.json()["name"] == "rita"
        form = client.get("/login")
        (csrf,) = re.findall(r'name="csrf" value="([^"]*)"', form.text)
        answer = client.post(
            "/login", data={"username": "rita", "password": PASSWORD, "csrf": csrf}
        )
        assert answer.status_code == 303
        cookie = next(c for c in answer.headers.get_list("set-cookie") if "session" in c)
        assert "secure" in [part.strip().lower() for part in cookie.split(";")]
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{port}/health", timeout=5)
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"https://127.0.0.1:{port}/health", timeout=5)
