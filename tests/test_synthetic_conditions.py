"""Type 2C attributes of the output are present only when their condition holds, whatever
the source carried: the output passes dciodvfy for inputs as GE and Philips write them."""

from __future__ import annotations

from pathlib import Path

import pytest
from synthesis import synthetic_ct

from factories import StudySpec, axial_series, ramp_pixels, write_series
from peers import dciodvfy_errors, have


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
