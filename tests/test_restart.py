"""The node as its own process: killed mid-way and restarted, it ends with exactly one
synthetic series at the PACS; SIGTERM stops it cleanly."""

from __future__ import annotations

import signal
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import sends_to, write_config

from factories import StudySpec, axial_series, ramp_pixels, write_series
from peers import NodeProcess, Orthanc, echoscu, free_port, stored_ok, storescu, wait_until

pytestmark = pytest.mark.integration


def _node(tmp_path: Path, pacs: Orthanc, stable_seconds: float) -> NodeProcess:
    port = free_port()
    config = write_config(
        tmp_path,
        {
            "node": {"port": port, "stable_seconds": stable_seconds},
            **sends_to(pacs.dicom_port),
        },
    )
    return NodeProcess(config, port)


def _query(tmp_path: Path, sql: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(tmp_path / "var" / "node.db") as conn:
        return conn.execute(sql).fetchall()


def _ct_series(pacs: Orthanc, study_uid: str) -> list[int]:
    return [
        len(s["Instances"])
        for s in pacs.series_of_study(study_uid)
        if s["MainDicomTags"].get("Modality") == "CT"
    ]


@pytest.mark.parametrize("kill_when", ["received, not yet stable", "job created"])
def test_killed_node_restarts_and_delivers_exactly_one_series(
    tmp_path: Path, orthanc_factory: Callable[..., Orthanc], models_dir: Path, kill_when: str
) -> None:
    pacs = orthanc_factory()
    node = _node(tmp_path, pacs, stable_seconds=2.0 if kill_when == "job created" else 30.0)
    node.start()
    try:
        study = StudySpec()
        paths = write_series(axial_series(study, ramp_pixels(slices=12)), tmp_path / "in")
        assert stored_ok(storescu("127.0.0.1", node.port, "DICOMNODE", paths)) == 12
        if kill_when == "job created":
            wait_until(
                lambda: _query(tmp_path, "SELECT id FROM job"), 30, interval=0.02, what="a job row"
            )
        assert node.signal(signal.SIGKILL) == -signal.SIGKILL
        assert _query(tmp_path, "SELECT count(*) FROM instance") == [(12,)]

        node.config = write_config(
            tmp_path,
            {
                "node": {"port": node.port, "stable_seconds": 1.0},
                **sends_to(pacs.dicom_port),
            },
        )
        node.start()
        wait_until(
            lambda: _ct_series(pacs, study.study_uid) == [12],
            60,
            what="one complete synthetic CT series in the PACS",
        )
        wait_until(
            lambda: _query(tmp_path, "SELECT state FROM delivery") == [("done",)],
            30,
            what="the delivery to be done",
        )
        assert _query(tmp_path, "SELECT state FROM job") == [("done",)]
        assert _ct_series(pacs, study.study_uid) == [12]
    finally:
        node.stop()


def test_sigterm_finishes_and_exits_zero(
    tmp_path: Path, orthanc_factory: Callable[..., Orthanc], models_dir: Path
) -> None:
    pacs = orthanc_factory()
    node = _node(tmp_path, pacs, stable_seconds=1.0).start()
    try:
        paths = write_series(axial_series(StudySpec(), ramp_pixels(slices=3)), tmp_path / "in")
        assert stored_ok(storescu("127.0.0.1", node.port, "DICOMNODE", paths)) == 3
        assert node.signal(signal.SIGTERM) == 0
        assert not echoscu("127.0.0.1", node.port, "DICOMNODE")
        assert '"event": "node.stopped"' in (tmp_path / "node.log").read_text()
    finally:
        node.stop()
