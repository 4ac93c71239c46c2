"""Output instances are tied to their source slices: a re-run on a study that gained
slices keeps every existing position under its UID, so a destination that keeps first
copies never holds one position under two UIDs or two positions under one."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from dicom_node.dicom.uids import output_series_uid
from dicom_node.evidence.provenance import InputRecord, ProvenanceRecord
from dicom_node.synthesize.label import Marking, build_series
from dicom_node.synthesize.volume import load_series
from factories import StudySpec, axial_series, ramp_pixels, write_series
from inference.geometry import Volume
from onnx_models import linear_card

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def _outputs(paths: list[Path], series_uid: str) -> dict[str, tuple[float, ...]]:
    """Output SOP Instance UID → Image Position (Patient), for the series in ``paths``."""
    source = load_series(paths, series_uid)
    card = linear_card()
    output_uid = output_series_uid([series_uid], card.id, card.version)
    provenance = ProvenanceRecord(
        node_name="DICOMNODE",
        node_version="test",
        ae_title="DICOMNODE",
        model_id=card.id,
        model_version=card.version,
        model_sha256="0" * 64,
        providers=("CPUExecutionProvider",),
        inputs=(InputRecord("T1", series_uid, len(paths), source.pixel_sha256),),
        study_uid=str(source.headers[0].StudyInstanceUID),
        output_series_uid=output_uid,
        output_role="CT",
        route_destinations=("pacs",),
        created_at=NOW.isoformat(),
    )
    result = Volume(np.zeros(source.volume.array.shape, np.float32), source.volume.geometry)
    datasets = build_series(result, [source], card, provenance, Marking(), NOW)
    return {
        str(ds.SOPInstanceUID): tuple(round(float(v), 3) for v in ds.ImagePositionPatient)
        for ds in datasets
    }


def test_a_rerun_on_more_slices_keeps_each_position_under_its_uid(tmp_path: Path) -> None:
    study = StudySpec()
    full = axial_series(study, ramp_pixels(slices=12), spacing=(2.0, 1.0, 1.0))
    series_uid = str(full[0].SeriesInstanceUID)
    every_other = full[::2]
    first = _outputs(write_series(every_other, tmp_path / "first"), series_uid)
    second = _outputs(write_series(full, tmp_path / "second"), series_uid)

    assert len(first) == 6 and len(second) == 12
    for uid, position in first.items():
        assert second[uid] == position
    merged = {**second, **first}
    assert len(set(merged.values())) == len(merged) == 12


def test_the_same_slices_give_the_same_uids_whatever_order_they_arrive_in(
    tmp_path: Path,
) -> None:
    study = StudySpec()
    series = axial_series(study, ramp_pixels(slices=8))
    series_uid = str(series[0].SeriesInstanceUID)
    paths = write_series(series, tmp_path / "in")
    assert _outputs(paths, series_uid) == _outputs(list(reversed(paths)), series_uid)
