"""`dicom-node roles explain`: the routing dry run on a folder and on a received study."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import write_config
from sqlalchemy import select

from dicom_node.cli.main import main as cli
from dicom_node.runtime.node import Node
from factories import StudySpec, axial_series, ramp_pixels, write_series
from peers import wait_until
from storage.models import Study, StudyState


def _study(folder: Path) -> tuple[StudySpec, list[Path]]:
    """A T1 whose description says nothing, an fMRI run whose name contains "T1", a
    localizer and a T2-FLAIR."""
    study = StudySpec()
    t1 = axial_series(study, ramp_pixels(slices=3), description="Sag 3D", series_number=3)
    for ds in t1:
        ds.ScanningSequence, ds.SequenceVariant, ds.InversionTime = "GR\\IR", "SK\\SP\\MP", 900
    fmri = axial_series(
        study, ramp_pixels(slices=3), description="REST1 w SMS PF7-8", series_number=4
    )
    localizer = axial_series(study, ramp_pixels(slices=2), description="localizer", series_number=1)
    flair = axial_series(study, ramp_pixels(slices=3), description="Ax T2 FLAIR", series_number=5)
    return study, write_series([*t1, *fmri, *localizer, *flair], folder)


def test_explain_on_a_folder_names_rules_exclusions_and_the_decision(
    tmp_path: Path, models_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, _ = _study(tmp_path / "in")
    config = write_config(tmp_path, {"routes": [{"model": "mr-t1-to-ct", "send_to": ["sender"]}]})
    assert cli(["--config", str(config), "roles", "explain", str(tmp_path / "in")]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].startswith("series ") and "'localizer'" in lines[0]
    assert lines[1].startswith("  excluded as localizer: rule 2: SeriesDescription 'localizer'")
    assert "  T1: yes, rule 3: Modality 'MR' matches /^MR$/; MRAcquisitionType '3D'" in out
    assert "  excluded as functional: rule 3: SeriesDescription 'REST1 w SMS PF7-8'" in out
    assert (
        "  FLAIR: yes, rule 1: " in out
        and "  T1: no; nearest rule 1: SeriesDescription 'Ax T2 FLAIR'" in out
    )
    assert (
        "route mr-t1-to-ct: no job, no destination: the sender is not a configured destination"
        in out
    )


def test_explain_on_a_received_study_gives_the_routing_decision(
    tmp_path: Path,
    node_factory: Callable[..., Node],
    models_dir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    node = node_factory()
    study, paths = _study(tmp_path / "in")
    config = str(tmp_path / "config.yaml")
    assert cli(["--config", config, "send", *map(str, paths)]) == 0

    def routed() -> bool:
        with node.db.session() as session:
            row = session.scalar(select(Study).where(Study.study_uid == study.study_uid))
            return row is not None and row.state == StudyState.ROUTED

    wait_until(routed, 30, what="the study to be routed")
    capsys.readouterr()
    assert cli(["--config", config, "roles", "explain", study.study_uid]) == 0
    out = capsys.readouterr().out
    assert "excluded as functional" in out and "T1: series " in out
    assert cli(["--config", config, "roles", "explain", "1.2.3.4"]) == 1
    assert "not held by this node" in capsys.readouterr().err
