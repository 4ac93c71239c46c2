"""Load: eight DCMTK storescu processes at once, each sending a 200-instance T1 study to
one node (its own process); every instance is acknowledged and indexed, every study
routed into exactly one job, and every synthetic series delivered whole to Orthanc.
The test prints how long each stage took on the machine it ran on."""

from __future__ import annotations

import sqlite3
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import write_config

from factories import StudySpec, axial_series, ramp_pixels, write_series
from peers import NodeProcess, Orthanc, free_port, stored_ok, storescu, wait_until

pytestmark = pytest.mark.integration

SENDERS = 8
SLICES = 200
RECEIVED = (
    "WHERE instance.series_id NOT IN (SELECT series.id FROM series "
    "JOIN output_series ON output_series.series_uid = series.series_uid)"
)


def _query(db: Path, sql: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(db, timeout=60) as conn:
        return list(conn.execute(sql).fetchall())


def _synthetic_counts(pacs: Orthanc, study_uid: str) -> list[int]:
    return [
        len(s["Instances"])
        for s in pacs.series_of_study(study_uid)
        if s["MainDicomTags"].get("Modality") == "CT"
    ]


def test_eight_simultaneous_senders_of_200_instances_are_all_stored_routed_and_delivered(
    tmp_path: Path,
    orthanc_factory: Callable[..., Orthanc],
    models_dir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    pacs = orthanc_factory()
    port = free_port()
    config = write_config(
        tmp_path,
        {
            # 3 s: on a loaded machine one association may pause for over a second
            # between two instances; a study routed mid-send would be a second job
            "node": {"port": port, "stable_seconds": 3.0},
            "destinations": [
                {
                    "name": "pacs",
                    "ae_title": "ORTHANC",
                    "host": "127.0.0.1",
                    "port": pacs.dicom_port,
                }
            ],
            "routes": [{"model": "mr-t1-to-ct", "send_to": ["pacs"]}],
        },
    )
    studies = [StudySpec(patient_id=f"LOAD-{i}") for i in range(SENDERS)]
    folders = [
        write_series(axial_series(s, ramp_pixels(slices=SLICES)), tmp_path / "in" / str(i))
        for i, s in enumerate(studies)
    ]
    db = tmp_path / "var" / "node.db"
    node = NodeProcess(config, port).start()
    try:
        started = time.monotonic()
        with ThreadPoolExecutor(SENDERS) as pool:
            results: list[subprocess.CompletedProcess[str]] = list(
                pool.map(
                    lambda i: storescu(
                        "127.0.0.1", port, "DICOMNODE", folders[i], calling=f"MODALITY{i}"
                    ),
                    range(SENDERS),
                )
            )
        received = time.monotonic() - started
        acknowledged = [stored_ok(r) for r in results]
        assert acknowledged == [SLICES] * SENDERS, [r.stderr[-500:] for r in results]
        # received instances only: a study that became stable first may already have
        # its synthetic series indexed beside it (Q/R serves outputs too)
        assert _query(db, f"SELECT count(*) FROM instance {RECEIVED}") == [(SENDERS * SLICES,)]
        per_study = {
            str(uid): count
            for uid, count in _query(
                db,
                "SELECT study.study_uid, count(*) FROM instance "
                "JOIN series ON series.id = instance.series_id "
                f"JOIN study ON study.id = series.study_id {RECEIVED} GROUP BY 1",
            )
        }
        assert per_study == {s.study_uid: SLICES for s in studies}

        wait_until(
            lambda: _query(db, "SELECT state, count(*) FROM job GROUP BY 1") == [("done", SENDERS)],
            480,
            interval=1.0,
            what="eight jobs done",
        )
        synthesized = time.monotonic() - started
        wait_until(
            lambda: (
                _query(db, "SELECT state, count(*) FROM delivery GROUP BY 1") == [("done", SENDERS)]
            ),
            480,
            interval=1.0,
            what="eight deliveries done",
        )
        delivered = time.monotonic() - started
        for study in studies:
            assert _synthetic_counts(pacs, study.study_uid) == [SLICES]
        assert _query(db, "SELECT count(*) FROM job") == [(SENDERS,)]
    finally:
        node.stop()
    with capsys.disabled():
        print(
            f"\nload: {SENDERS} storescu × {SLICES} instances (64×64): all acknowledged and "
            f"indexed after {received:.1f} s, {SENDERS} jobs done after {synthesized:.1f} s, "
            f"{SENDERS} × {SLICES} synthetic instances in Orthanc after {delivered:.1f} s"
        )
