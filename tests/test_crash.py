"""kill -9 at random moments: the node, run as its own process against a real Orthanc,
is SIGKILLed while receiving, while a study waits to be routed, during inference, while
it writes its outputs and while it sends them, and restarted each time. Nothing
acknowledged may be lost, and every study must end as exactly one complete synthetic
series at the destination. The same loop runs hundreds of kills in ``tools/soak.py``.

The seed is random unless ``CRASH_SEED`` is set, and printed with the tally: the seed
fixes the plan (which studies, which moments, which delays), not the machine's timing.
"""

from __future__ import annotations

import io
import os
import random
import signal
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pydicom
import pytest
from conftest import write_config
from crashloop import TARGETS, CrashLoop

from dicom_node.evidence.provenance import read_private_block
from factories import StudySpec, axial_series, ramp_pixels, write_series
from peers import NodeProcess, Orthanc, free_port, stored_ok, storescu, wait_until

pytestmark = pytest.mark.integration

STABLE_S = 3.0
"""The node's stable time here: the resend after a restart must come within it, which a
machine busy with other work (a start-up, a storescu spawned) can stretch past 1 s."""


def test_kill_9_at_random_moments_loses_nothing_and_delivers_each_study_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    seed = int(os.environ.get("CRASH_SEED") or random.SystemRandom().randrange(2**32))
    with capsys.disabled():
        print(f"\ncrash loop seed {seed} (CRASH_SEED={seed} replays the plan)")
    with CrashLoop(tmp_path / "crash", seed, log=print) as loop:
        tally = loop.run(kills=12, cover_every_target=True, max_studies=30)
    with capsys.disabled():
        print(tally.table())

    assert tally.total_kills >= 10, tally.table()
    assert all(tally.kills[t] for t in TARGETS), f"not every phase was hit\n{tally.table()}"
    assert tally.lost == [], tally.table()
    assert tally.duplicated == [], tally.table()
    assert tally.incomplete == [], tally.table()
    assert tally.mixed == [], tally.table()
    assert tally.acknowledged == tally.instances_sent
    assert tally.delivered_series == tally.studies
    assert tally.recovered == tally.interrupted


def _query(db: Path, sql: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(db) as conn:
        return conn.execute(sql).fetchall()


def test_a_study_cut_mid_association_is_not_routed_on_part_of_it_after_a_restart(
    tmp_path: Path, orthanc_factory: Callable[..., Orthanc], models_dir: Path
) -> None:
    """The stop cut the sender off; the quiet time while the node was down is no sign that
    the study is complete. Routed at once on restart, its first half would be synthesized
    and sent, then re-run when the rest came, and Orthanc — which keeps the first copy of
    an instance — would hold a series mixing both runs."""
    pacs = orthanc_factory()
    port = free_port()
    config = write_config(
        tmp_path,
        {
            "node": {"port": port, "stable_seconds": STABLE_S},
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
    node = NodeProcess(config, port).start()
    db = tmp_path / "var" / "node.db"
    try:
        study = StudySpec()
        paths = write_series(axial_series(study, ramp_pixels(slices=8)), tmp_path / "in")
        assert stored_ok(storescu("127.0.0.1", port, "DICOMNODE", paths[:4])) == 4
        assert node.signal(signal.SIGKILL) == -signal.SIGKILL

        (last,) = _query(db, "SELECT last_received_at FROM study")[0]
        before = datetime.fromisoformat(str(last)).replace(tzinfo=UTC)
        wait_until(
            lambda: (datetime.now(UTC) - before).total_seconds() > STABLE_S + 1.0,
            10,
            what="the study to be older than stable_seconds while the node is down",
        )
        restarted_at = datetime.now(UTC)
        node.start()
        (last,) = _query(db, "SELECT last_received_at FROM study")[0]
        restarted_clock = datetime.fromisoformat(str(last)).replace(tzinfo=UTC)
        assert restarted_clock >= restarted_at, "the restart must restart the stability clock"

        assert stored_ok(storescu("127.0.0.1", port, "DICOMNODE", paths[4:])) == 4

        def one_series() -> list[str] | None:
            found = [
                s["Instances"]
                for s in pacs.series_of_study(study.study_uid)
                if s["MainDicomTags"].get("Modality") == "CT"
            ]
            return found[0] if len(found) == 1 and len(found[0]) == 8 else None

        instances = wait_until(one_series, 90, what="one synthetic CT of 8 instances")
        wait_until(
            lambda: _query(db, "SELECT state FROM delivery") == [("done",)],
            60,
            what="the delivery to be done",
        )
        assert [row[0] for row in _query(db, "SELECT state FROM job")] == ["done"]
        for instance_id in instances:
            ds = pydicom.dcmread(io.BytesIO(pacs.get_bytes(f"/instances/{instance_id}/file")))
            record = read_private_block(ds)
            assert record is not None and record.inputs[0].instance_count == 8
    finally:
        node.stop()
