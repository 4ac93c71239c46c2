"""`serve --stages`: the stages run apart, one per process, sharing only the database and
the spool; a study still goes PACS → node → PACS through a real Orthanc, on SQLite and on
PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import sends_to, write_config
from sqlalchemy import select

from dicom_node.cli.main import main as cli
from factories import StudySpec, axial_series, ramp_pixels, write_series
from peers import NodeProcess, Orthanc, free_port, stored_ok, storescu, wait_until
from storage.database import Database
from storage.models import Delivery, DeliveryState, OutputSeries, OutputState


def test_unknown_stage_is_refused(tmp_path: Path) -> None:
    config = write_config(tmp_path, {})
    assert cli(["serve", "--config", str(config), "--stages", "receive,infer"]) == 2


@pytest.mark.integration
def test_stages_in_three_processes_round_trip_through_orthanc(
    tmp_path: Path,
    database_url: str,
    orthanc_factory: Callable[..., Orthanc],
    models_dir: Path,
    signing_keys: tuple[Path, Path],
) -> None:
    node_port = free_port()
    pacs = orthanc_factory(
        modalities={"node": ("DICOMNODE", "127.0.0.1", node_port)}, auto_route=True
    )
    overrides = {
        "node": {"port": node_port},
        "storage": {"database_url": database_url},
        **sends_to(pacs.dicom_port),
    }
    config = write_config(tmp_path, overrides, signing_keys)
    processes = [
        NodeProcess(config, node_port, stages=stages)
        for stages in ("receive,route", "synthesize", "dispatch")
    ]
    try:
        for process in processes:
            process.start()
        study = StudySpec()
        source = axial_series(study, ramp_pixels(slices=6, rows=64, cols=72), "T1 MPRAGE")
        paths = write_series(source, tmp_path / "t1")
        result = storescu("127.0.0.1", pacs.dicom_port, "ORTHANC", paths)
        assert stored_ok(result) == len(paths), result.stdout + result.stderr

        def ct_in_pacs() -> bool:
            return any(
                s["MainDicomTags"].get("Modality") == "CT" and len(s["Instances"]) == 6
                for s in pacs.series_of_study(study.study_uid)
            )

        wait_until(ct_in_pacs, 120, what="the synthetic CT in the PACS")
        db = Database(database_url)

        def delivered() -> bool:
            with db.session() as session:
                out = session.scalars(select(OutputSeries)).one()
                states = set(session.scalars(select(Delivery.state)))
                return out.state == OutputState.DELIVERED and states == {DeliveryState.DONE}

        wait_until(delivered, 30, what="the output series marked delivered")
        db.dispose()
    finally:
        for process in processes:
            process.stop()
