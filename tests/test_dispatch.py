"""Dispatch: deliveries to a real Orthanc that is up, down, or refusing."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from dicom_node.cli.main import main as cli
from dicom_node.dispatch.dispatcher import backoff
from dicom_node.runtime.node import Node
from factories import StudySpec, axial_series, ramp_pixels, write_series
from peers import Orthanc, StoreSCP, free_port, stored_ok, storescu, wait_until
from storage.models import AuditEvent, Delivery, DeliveryState, OutputSeries, OutputState

pytestmark = pytest.mark.integration


def test_backoff_doubles_up_to_the_cap() -> None:
    assert [backoff(n, 5, 60).total_seconds() for n in range(1, 7)] == [5, 10, 20, 40, 60, 60]
    assert backoff(0, 5, 60) == timedelta(seconds=5)


def _node_sending_to(node_factory: Callable[..., Node], port: int, **dispatch: Any) -> Node:
    return node_factory(
        {
            "destinations": [
                {"name": "pacs", "ae_title": "ORTHANC", "host": "127.0.0.1", "port": port}
            ],
            "routes": [{"model": "mr-t1-to-ct", "send_to": ["pacs"]}],
            "dispatch": {"backoff_initial_s": 0.2, "backoff_max_s": 1.0, **dispatch},
        }
    )


def _send_study(node: Node, folder: Path, slices: int = 3) -> StudySpec:
    assert node.address is not None
    study = StudySpec()
    paths = write_series(axial_series(study, ramp_pixels(slices=slices)), folder)
    assert stored_ok(storescu("127.0.0.1", node.address[1], "DICOMNODE", paths)) == slices
    return study


def _delivery(node: Node) -> Delivery | None:
    with node.db.session() as session:
        return session.scalar(select(Delivery))


def _ct_instances(pacs: Orthanc, study_uid: str) -> list[int]:
    return [
        len(s["Instances"])
        for s in pacs.series_of_study(study_uid)
        if s["MainDicomTags"].get("Modality") == "CT"
    ]


def test_unreachable_destination_is_retried_with_backoff_then_parked(
    tmp_path: Path,
    node_factory: Callable[..., Node],
    models_dir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    node = _node_sending_to(node_factory, free_port(), max_attempts=3)
    _send_study(node, tmp_path / "in")
    parked = wait_until(
        lambda: (d := _delivery(node)) is not None and d.state == DeliveryState.PARKED and d,
        60,
        what="the delivery to be parked",
    )
    assert parked.attempts == 3
    assert "cannot connect" in (parked.last_error or "")
    with node.db.session() as session:
        kinds = [
            e.kind
            for e in session.scalars(
                select(AuditEvent).where(AuditEvent.kind.like("delivery.%")).order_by(AuditEvent.id)
            )
        ]
    assert kinds == ["delivery.retry", "delivery.retry", "delivery.parked"]

    config = str(tmp_path / "config.yaml")
    assert cli(["--config", config, "outbox", "list"]) == 0
    assert "parked" in capsys.readouterr().out


def test_refusing_destination_is_parked_with_its_status(
    tmp_path: Path, node_factory: Callable[..., Node], models_dir: Path
) -> None:
    full = StoreSCP(tmp_path / "full").start()
    try:
        shutil.rmtree(full.folder)
        node = node_factory(
            {
                "destinations": [
                    {"name": "pacs", "ae_title": full.aet, "host": "127.0.0.1", "port": full.port}
                ],
                "routes": [{"model": "mr-t1-to-ct", "send_to": ["pacs"]}],
                "dispatch": {"backoff_initial_s": 0.2, "backoff_max_s": 1.0, "max_attempts": 2},
            }
        )
        _send_study(node, tmp_path / "in")
        parked = wait_until(
            lambda: (d := _delivery(node)) is not None and d.state == DeliveryState.PARKED and d,
            60,
            what="the delivery to be parked",
        )
    finally:
        full.stop()
    assert parked.attempts == 2
    assert "refused instance 1 of 3 with status 0xA700" in (parked.last_error or "")


def test_outage_then_recovery_delivers_once_and_operator_retry_resends_same_series(
    tmp_path: Path,
    orthanc_factory: Callable[..., Orthanc],
    node_factory: Callable[..., Node],
    models_dir: Path,
) -> None:
    pacs = orthanc_factory()
    pacs.stop()
    node = _node_sending_to(node_factory, pacs.dicom_port, max_attempts=50)
    study = _send_study(node, tmp_path / "in", slices=4)
    wait_until(
        lambda: (d := _delivery(node)) is not None and d.attempts >= 2,
        60,
        what="two failed attempts while the PACS is down",
    )
    pacs.start()
    wait_until(
        lambda: (d := _delivery(node)) is not None and d.state == DeliveryState.DONE,
        60,
        what="delivery after the PACS came back",
    )
    assert _ct_instances(pacs, study.study_uid) == [4]

    delivery = _delivery(node)
    assert delivery is not None
    config = str(tmp_path / "config.yaml")
    assert cli(["--config", config, "outbox", "retry", str(delivery.id)]) == 0
    wait_until(
        lambda: (
            (d := _delivery(node)) is not None and d.state == DeliveryState.DONE and d.attempts == 1
        ),
        60,
        what="the retried delivery",
    )
    assert _ct_instances(pacs, study.study_uid) == [4]


def _delivered(node: Node) -> bool:
    """The output series is delivered and every one of its deliveries done."""
    with node.db.session() as session:
        output = session.scalar(select(OutputSeries))
        states = set(session.scalars(select(Delivery.state)))
    return (
        output is not None
        and output.state == OutputState.DELIVERED
        and states == {DeliveryState.DONE}
    )


def test_operator_lists_the_study_and_resends_its_output_to_the_route_or_a_named_destination(
    tmp_path: Path,
    orthanc_factory: Callable[..., Orthanc],
    node_factory: Callable[..., Node],
    models_dir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    pacs, archive = orthanc_factory("pacs"), orthanc_factory("archive")
    node = node_factory(
        {
            "destinations": [
                {"name": name, "ae_title": "ORTHANC", "host": "127.0.0.1", "port": peer.dicom_port}
                for name, peer in (("pacs", pacs), ("archive", archive))
            ],
            "routes": [{"model": "mr-t1-to-ct", "send_to": ["pacs"]}],
            "dispatch": {"backoff_initial_s": 0.2, "backoff_max_s": 1.0},
        }
    )
    study = _send_study(node, tmp_path / "in", slices=4)
    wait_until(lambda: _delivered(node), 60, what="the output delivered to the PACS")
    assert _ct_instances(pacs, study.study_uid) == [4]
    config = str(tmp_path / "config.yaml")

    capsys.readouterr()
    assert cli(["--config", config, "studies", "list", "--json"]) == 0
    (row,) = map(json.loads, capsys.readouterr().out.splitlines())
    assert (row["study_uid"], row["state"]) == (study.study_uid, "routed")
    t1, ct = row["series"]  # Series Number order: 3, then 9003
    assert (t1["modality"], t1["roles"], t1["ignored"], t1["output"]) == ("MR", ["T1"], None, None)
    assert (ct["modality"], ct["roles"], ct["ignored"]) == ("CT", [], "synthetic")
    assert ct["output"] == {
        "model": "mr-t1-to-ct@1.0.0",
        "state": "delivered",
        "send_to": ["pacs"],
        "review": None,
    }
    assert ct["instances"] == 4
    assert cli(["--config", config, "studies", "list"]) == 0
    assert "#3 MR T1; #9003 CT output of mr-t1-to-ct@1.0.0, delivered" in capsys.readouterr().out

    series_uid = ct["series_uid"]
    assert cli(["--config", config, "outbox", "resend", series_uid, "--to", "archive"]) == 0
    wait_until(lambda: _ct_instances(archive, study.study_uid) == [4], 60, what="the archive copy")
    wait_until(lambda: _delivered(node), 30, what="the series delivered again")

    for series in pacs.series_of_study(study.study_uid):  # the PACS lost the output
        if series["MainDicomTags"].get("Modality") == "CT":
            pacs.delete(f"/series/{series['ID']}")
    assert _ct_instances(pacs, study.study_uid) == []
    assert cli(["--config", config, "outbox", "resend", series_uid]) == 0
    assert f"output series {series_uid}: queued for pacs" in capsys.readouterr().out
    wait_until(lambda: _ct_instances(pacs, study.study_uid) == [4], 60, what="the PACS copy")
    wait_until(lambda: _delivered(node), 30, what="the series delivered again")

    assert cli(["--config", config, "outbox", "resend", "1.2.3.4"]) == 1
    assert cli(["--config", config, "outbox", "resend", series_uid, "--to", "nowhere"]) == 1
    err = capsys.readouterr().err
    assert "no output series 1.2.3.4" in err and "no destination named nowhere" in err
