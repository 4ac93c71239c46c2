"""Type 2C attributes of the output are present only when their condition holds, whatever
the source carried: the output passes dciodvfy for inputs as GE and Philips write them."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset

from dicom_node.provenance import InputRecord, ProvenanceRecord
from dicom_node.synthetic import Marking, build_series
from dicom_node.uids import output_series_uid
from dicom_node.volume import load_series
from factories import StudySpec, axial_series, ramp_pixels, write_series
from inference.geometry import Volume
from onnx_models import linear_card
from peers import dciodvfy_errors, have

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def synthetic_ct(paths: list[Path], series_uid: str) -> list[Dataset]:
    """The synthetic CT that `mr-t1-to-ct` makes of the series in ``paths`` (all zeros)."""
    source = load_series(paths, series_uid)
    card = linear_card()
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
        output_series_uid=output_series_uid([series_uid], card.id, card.version),
        output_role="CT",
        route_destinations=("pacs",),
        created_at=NOW.isoformat(),
    )
    result = Volume(np.zeros(source.volume.array.shape, np.float32), source.volume.geometry)
    return build_series(result, [source], card, provenance, Marking(), NOW)


@pytest.mark.parametrize(
    ("source", "laterality"),
    [
        ({"BodyPartExamined": "HEAD", "Laterality": ""}, None),  # GE, Philips brain MR
        ({"BodyPartExamined": "BRAIN", "Laterality": "R"}, None),  # unpaired: not copied
        ({"BodyPartExamined": "BREAST", "Laterality": "L"}, "L"),
        ({"BodyPartExamined": "KNEE", "Laterality": ""}, ""),  # paired, side not stated
        ({"Laterality": ""}, ""),  # no body part: cannot rule out a paired one
        ({}, ""),
    ],
    ids=["head-empty", "brain-R", "breast-L", "knee-empty", "no-body-part", "nothing"],
)
def test_laterality_only_when_its_condition_holds(
    tmp_path: Path, source: dict[str, str], laterality: str | None
) -> None:
    series = axial_series(StudySpec(), ramp_pixels(slices=2, rows=64, cols=64))
    for ds in series:
        for keyword, value in source.items():
            setattr(ds, keyword, value)
    out = synthetic_ct(write_series(series, tmp_path / "in"), str(series[0].SeriesInstanceUID))
    for ds in out:
        if laterality is None:
            assert "Laterality" not in ds
        else:
            assert (ds.Laterality or "") == laterality
    if have("dciodvfy"):
        path = tmp_path / "out.dcm"
        out[0].save_as(path, enforce_file_format=True)
        assert dciodvfy_errors(path) == []
