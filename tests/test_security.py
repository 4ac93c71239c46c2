"""Nobody let in who should not be: AE titles, host allow-lists, DICOM TLS both ways,
owner-only files; and a SIGTERM that loses nothing acknowledged."""

from __future__ import annotations

import logging
import signal
import ssl
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import write_config
from pki import CertificateAuthority, Issued
from pynetdicom import AE
from sqlalchemy import func, select

from dicom_node.runtime.node import Node
from factories import StudySpec, axial_series, ramp_pixels, write_series
from peers import DCMTK_ENV, NodeProcess, StoreSCP, free_port, stored_ok, storescu, wait_until
from storage.models import Delivery, DeliveryState, Instance

pytestmark = pytest.mark.integration


def _port(node: Node) -> int:
    assert node.address is not None
    return node.address[1]


def _rejections(caplog: pytest.LogCaptureFixture) -> list[dict[str, str]]:
    return [
        r.fields
        for r in caplog.records
        if r.getMessage() == "association.rejected" and hasattr(r, "fields")
    ]


def test_host_allow_list_per_ae_title(
    tmp_path: Path, node_factory: Callable[..., Node], caplog: pytest.LogCaptureFixture
) -> None:
    node = node_factory(
        {"node": {"calling_ae_hosts": {"PACS1": ["10.20.0.0/16"], "WS1": ["127.0.0.1"]}}}
    )
    paths = write_series(axial_series(StudySpec(), ramp_pixels(slices=1)), tmp_path / "in")
    with caplog.at_level(logging.INFO, logger="dicom_node"):
        assert (
            stored_ok(storescu("127.0.0.1", _port(node), "DICOMNODE", paths, calling="PACS1")) == 0
        )
        assert stored_ok(storescu("127.0.0.1", _port(node), "DICOMNODE", paths, calling="WS1")) == 1
        assert (
            stored_ok(storescu("127.0.0.1", _port(node), "DICOMNODE", paths, calling="ANYONE")) == 1
        )
    (rejected,) = _rejections(caplog)
    assert rejected["calling_ae"] == "PACS1"
    assert rejected["reason"] == "'PACS1' may not call from 127.0.0.1"


@pytest.fixture
def pki(tmp_path: Path) -> tuple[CertificateAuthority, CertificateAuthority]:
    return CertificateAuthority(tmp_path / "pki", "hospital"), CertificateAuthority(
        tmp_path / "pki", "rogue"
    )


def _tls_storescu(
    port: int, paths: list[Path], client: tuple[Path, Path] | None, ca: Path
) -> subprocess.CompletedProcess[str]:
    tls = (
        ["+tls", str(client[1]), str(client[0]), "+cf", str(ca)]
        if client
        else ["+tla", "+cf", str(ca)]
    )
    return subprocess.run(
        ["storescu", "-v", *tls, "-aec", "DICOMNODE", "127.0.0.1", str(port), *map(str, paths)],
        capture_output=True,
        text=True,
        env=DCMTK_ENV,
        timeout=120,
    )


def test_tls_receive_refuses_plain_and_untrusted_peers_and_accepts_trusted_ones(
    tmp_path: Path,
    node_factory: Callable[..., Node],
    pki: tuple[CertificateAuthority, CertificateAuthority],
) -> None:
    hospital, rogue = pki
    server = hospital.issue("node")
    node = node_factory(
        {
            "node": {
                "tls": {
                    "certificate": str(server.certificate),
                    "key": str(server.key),
                    "ca": str(hospital.certificate),
                    "require_client_certificate": True,
                }
            }
        }
    )
    paths = write_series(axial_series(StudySpec(), ramp_pixels(slices=2)), tmp_path / "in")

    plain = storescu("127.0.0.1", _port(node), "DICOMNODE", paths)
    assert stored_ok(plain) == 0 and "Association Accepted" not in plain.stdout + plain.stderr

    intruder = rogue.issue("intruder")
    untrusted = _tls_storescu(
        _port(node), paths, (intruder.certificate, intruder.key), hospital.certificate
    )
    assert stored_ok(untrusted) == 0

    anonymous = _tls_storescu(_port(node), paths, None, hospital.certificate)
    assert stored_ok(anonymous) == 0

    workstation = hospital.issue("workstation")
    trusted = _tls_storescu(
        _port(node), paths, (workstation.certificate, workstation.key), hospital.certificate
    )
    assert stored_ok(trusted) == 2, trusted.stdout + trusted.stderr

    context = ssl.create_default_context(cafile=str(hospital.certificate))
    context.load_cert_chain(workstation.certificate, workstation.key)
    ae = AE(ae_title="PYNETDICOM")
    ae.add_requested_context("1.2.840.10008.1.1")
    assoc = ae.associate(
        "127.0.0.1", _port(node), ae_title="DICOMNODE", tls_args=(context, "localhost")
    )
    assert assoc.is_established
    assert assoc.send_c_echo().Status == 0
    assoc.release()
    with node.db.session() as session:
        assert session.scalar(select(func.count(Instance.id))) == 2


def _tls_storescp(
    folder: Path, server: Issued, ca: Path, client: Issued, client_ca: Path
) -> StoreSCP:
    """storescp over TLS with ``server``'s certificate, requiring a client certificate
    from ``ca``; answers an echo made with ``client`` trusting ``client_ca``."""
    scp = StoreSCP(folder, extra=["+tls", str(server.key), str(server.certificate), "+cf", str(ca)])
    return scp.start(echo=["+tls", str(client.key), str(client.certificate), "+cf", str(client_ca)])


def test_tls_send_delivers_to_a_trusted_destination_only(
    tmp_path: Path,
    node_factory: Callable[..., Node],
    models_dir: Path,
    pki: tuple[CertificateAuthority, CertificateAuthority],
) -> None:
    hospital, rogue = pki
    client = hospital.issue("dicom-node")
    good_cert, bad_cert = hospital.issue("pacs"), rogue.issue("fake-pacs")
    good = _tls_storescp(
        tmp_path / "good", good_cert, hospital.certificate, client, hospital.certificate
    )
    rogue_client = rogue.issue("probe")
    fake = _tls_storescp(
        tmp_path / "fake", bad_cert, rogue.certificate, rogue_client, rogue.certificate
    )
    try:
        tls = {
            "ca": str(hospital.certificate),
            "certificate": str(client.certificate),
            "key": str(client.key),
            "server_name": "localhost",
        }
        node = node_factory(
            {
                "destinations": [
                    {
                        "name": "pacs",
                        "ae_title": good.aet,
                        "host": "127.0.0.1",
                        "port": good.port,
                        "tls": tls,
                    },
                    {
                        "name": "fake",
                        "ae_title": fake.aet,
                        "host": "127.0.0.1",
                        "port": fake.port,
                        "tls": tls,
                    },
                ],
                "routes": [{"model": "mr-t1-to-ct", "send_to": ["pacs", "fake"]}],
                "dispatch": {"max_attempts": 2, "backoff_initial_s": 0.2, "backoff_max_s": 0.5},
            }
        )
        paths = write_series(axial_series(StudySpec(), ramp_pixels(slices=3)), tmp_path / "in")
        assert stored_ok(storescu("127.0.0.1", _port(node), "DICOMNODE", paths)) == 3

        def settled() -> dict[str, Delivery] | None:
            with node.db.session() as session:
                rows = {d.destination: d for d in session.scalars(select(Delivery))}
            done = {DeliveryState.DONE, DeliveryState.PARKED}
            return rows if len(rows) == 2 and all(d.state in done for d in rows.values()) else None

        rows = wait_until(settled, 60, what="both deliveries to end")
        assert rows["pacs"].state == DeliveryState.DONE
        assert len(list(good.folder.glob("CT*"))) == 3
        assert rows["fake"].state == DeliveryState.PARKED
        assert list(fake.folder.glob("CT*")) == []
    finally:
        good.stop()
        fake.stop()


def test_database_and_spool_are_owner_only(
    tmp_path: Path, node_factory: Callable[..., Node]
) -> None:
    node = node_factory()
    paths = write_series(axial_series(StudySpec(), ramp_pixels(slices=2)), tmp_path / "in")
    assert stored_ok(storescu("127.0.0.1", _port(node), "DICOMNODE", paths)) == 2
    database = Path(node.db.engine.url.database or "")
    assert stat.S_IMODE(database.stat().st_mode) == 0o600
    for path in node.spool.root.rglob("*"):
        expected = 0o700 if path.is_dir() else 0o600
        assert stat.S_IMODE(path.stat().st_mode) == expected, path


def test_sigterm_mid_association_loses_no_acknowledged_instance(
    tmp_path: Path, signing_keys: tuple[Path, Path]
) -> None:
    port = free_port()
    config = write_config(tmp_path, {"node": {"port": port, "stable_seconds": 600}}, signing_keys)
    node = NodeProcess(config, port).start()
    # long enough that the stop lands mid-association however fast the node receives
    slices = 600
    pixels = ramp_pixels(slices=slices, rows=128, cols=128)
    paths = write_series(axial_series(StudySpec(), pixels), tmp_path / "in")
    try:
        sender = subprocess.Popen(
            ["storescu", "-v", "-aec", "DICOMNODE", "127.0.0.1", str(port), *map(str, paths)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=DCMTK_ENV,
        )
        wait_until(lambda: _count(tmp_path) >= 20, 60, interval=0.05, what="20 instances in")
        assert node.signal(signal.SIGTERM) == 0
        output, _ = sender.communicate(timeout=60)
        acknowledged = output.count("Received Store Response (Success)")
        assert 20 <= acknowledged < slices, "stopped mid-association"
        assert _count(tmp_path) >= acknowledged
        log = (tmp_path / "node.log").read_text()
        assert '"event": "scp.stopped"' in log and '"event": "node.stopped"' in log
        node.start()
        assert _count(tmp_path) >= acknowledged
    finally:
        node.stop()


def _count(folder: Path) -> int:
    import sqlite3

    database = folder / "var" / "node.db"
    if not database.exists():
        return 0
    with sqlite3.connect(database) as conn:
        try:
            return int(conn.execute("SELECT count(*) FROM instance").fetchone()[0])
        except sqlite3.OperationalError:
            return 0
