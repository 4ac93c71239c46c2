"""Enhanced (multi-frame) input: real Enhanced MR and CT files from pydicom-data in several
transfer syntaxes, Enhanced MR and Legacy Converted Enhanced MR written here from classic
series, several stacks refused by name, and classic output that names its source frames."""

from __future__ import annotations

import copy
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from synthesis import synthetic_ct

from dicom_node.synthesize.volume import VolumeError, load_series
from factories import StudySpec, axial_series, enhanced_mr, ramp_pixels, valid_ds, write_series
from peers import dciodvfy_errors, have

EMRI = (
    "emri_small.dcm",
    "emri_small_big_endian.dcm",
    "emri_small_RLE.dcm",
    "emri_small_jpeg_2k_lossless.dcm",
    "emri_small_jpeg_ls_lossless.dcm",
)
"""pydicom-data's real Enhanced MR (10 frames of 64×64) in five transfer syntaxes."""


def _data(name: str) -> Path:
    path = get_testdata_file(name)
    if path is None:
        pytest.fail(f"pydicom-data does not hold {name}: install the test extra")
    return Path(str(path))


def _item(**attributes: object) -> Dataset:
    item = Dataset()
    for keyword, value in attributes.items():
        setattr(item, keyword, value)
    return item


def _placed(ds: Dataset) -> Dataset:
    """emri_small with the functional groups that its anonymisation stripped put back:
    axial frames 1.2 mm apart (its Spacing Between Slices), 1 mm pixels."""
    ds = copy.deepcopy(ds)
    gap = float(ds.SpacingBetweenSlices)
    ds.SharedFunctionalGroupsSequence = [
        _item(
            PlaneOrientationSequence=[_item(ImageOrientationPatient=[1, 0, 0, 0, 1, 0])],
            PixelMeasuresSequence=[_item(PixelSpacing=[1, 1], SliceThickness=gap)],
        )
    ]
    ds.PerFrameFunctionalGroupsSequence = [
        _item(
            PlanePositionSequence=[_item(ImagePositionPatient=[0, 0, round(k * gap, 3)])],
            FrameContentSequence=[_item(StackID="1", InStackPositionNumber=k + 1)],
        )
        for k in range(int(ds.NumberOfFrames))
    ]
    return ds


@pytest.mark.parametrize("name", EMRI)
def test_real_enhanced_mr_reads_the_same_volume_in_every_transfer_syntax(
    tmp_path: Path, name: str
) -> None:
    reference = load_series(
        [_save(_placed(pydicom.dcmread(_data(EMRI[0]))), tmp_path / "ref")], "s"
    )
    path = _save(_placed(pydicom.dcmread(_data(name))), tmp_path / "in")
    loaded = load_series([path], "s")
    assert loaded.volume.array.shape == (10, 64, 64)
    assert np.array_equal(loaded.volume.array, reference.volume.array)
    assert loaded.volume.geometry == reference.volume.geometry
    assert loaded.volume.geometry.spacing == pytest.approx((1.2, 1.0, 1.0))
    assert loaded.frames == tuple(range(1, 11))
    assert np.array_equal(loaded.volume.array[3], pydicom.dcmread(path).pixel_array[3])


def test_real_enhanced_mr_without_plane_position_is_refused_naming_it() -> None:
    with pytest.raises(VolumeError) as err:
        load_series([_data("emri_small.dcm")], "s")
    assert "series s" in str(err.value)
    assert "Per-Frame Functional Groups Sequence has 0 items for 10 frames" in str(err.value)


def test_real_enhanced_ct_is_placed_and_rescaled_by_its_functional_groups() -> None:
    path = _data("eCT_Supplemental.dcm")
    loaded = load_series([path], "ct")
    ds = pydicom.dcmread(path)
    geometry = loaded.volume.geometry
    assert geometry.shape == (2, 512, 512)
    assert geometry.row_direction == (-1.0, 0.0, 0.0)
    assert geometry.spacing == pytest.approx((10.0, 0.388672, 0.388672))
    assert geometry.origin == pytest.approx((99.5, -301.5, -149.0))  # along the normal first
    by_z = {-159.0: 0, -149.0: 1}
    for k in range(2):
        frame = by_z[geometry.slice_origin(k)[2]]
        expected = ds.pixel_array[frame].astype(np.float32) - 1024.0
        assert np.array_equal(loaded.volume.array[k], expected)


def _save(ds: Dataset, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{ds.SOPInstanceUID}.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


def _classic(slices: int = 6, reverse: bool = False) -> list[Dataset]:
    series = valid_ds(
        axial_series(StudySpec(), ramp_pixels(slices=slices), spacing=(2.5, 0.9, 0.8))
    )
    return list(reversed(series)) if reverse else series


@pytest.mark.parametrize("reverse", [False, True], ids=["in-order", "frames-reversed"])
def test_enhanced_mr_gives_the_volume_of_the_classic_series_it_holds(
    tmp_path: Path, reverse: bool
) -> None:
    classic = _classic(reverse=reverse)
    expected = load_series(write_series(classic, tmp_path / "classic"), "s")
    loaded = load_series([_save(enhanced_mr(classic), tmp_path / "enhanced")], "s")
    assert np.array_equal(loaded.volume.array, expected.volume.array)
    assert loaded.volume.geometry.same_grid(expected.volume.geometry)
    first = [float(v) for v in loaded.headers[0].ImagePositionPatient]
    assert first == [float(v) for v in expected.headers[0].ImagePositionPatient]


def test_legacy_converted_enhanced_mr_from_highdicom_gives_the_classic_volume(
    tmp_path: Path,
) -> None:
    classic = _classic()
    paths = write_series(classic, tmp_path / "classic")
    expected = load_series(paths, "s")
    legacy = hd.legacy.LegacyConvertedEnhancedMRImage(
        [pydicom.dcmread(p) for p in paths],
        series_instance_uid=generate_uid(),
        series_number=10,
        sop_instance_uid=generate_uid(),
        instance_number=1,
    )
    loaded = load_series([_save(legacy, tmp_path / "legacy")], "s")
    assert np.array_equal(loaded.volume.array, expected.volume.array)
    assert loaded.volume.geometry.same_grid(expected.volume.geometry)


@pytest.mark.parametrize(
    ("stacks", "named"),
    [
        ({"echo_times": [10.0] * 3 + [90.0] * 3}, "Effective Echo Time 10.0, 90.0"),
        ({"temporal_positions": [1, 1, 1, 2, 2, 2]}, "Temporal Position Index 1, 2"),
    ],
    ids=["two-echoes", "two-time-points"],
)
def test_an_object_holding_several_stacks_is_refused_naming_what_varies(
    tmp_path: Path, stacks: dict[str, list[float]], named: str
) -> None:
    positions = _classic(slices=3)
    classic = [*positions, *copy.deepcopy(positions)]
    path = _save(enhanced_mr(classic, **stacks), tmp_path)  # type: ignore[arg-type]
    with pytest.raises(VolumeError) as err:
        load_series([path], "s")
    message = str(err.value)
    assert "series s" in message and path.name in message
    assert f"holds 2 stacks ({named})" in message


def test_a_multi_frame_object_of_a_classic_class_is_refused(tmp_path: Path) -> None:
    ds = pydicom.dcmread(_data("emri_small.dcm"))
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
    with pytest.raises(VolumeError, match="has no functional groups to place its frames"):
        load_series([_save(ds, tmp_path)], "s")


def test_classic_synthetic_ct_from_enhanced_mr_names_each_source_frame(tmp_path: Path) -> None:
    classic = valid_ds(axial_series(StudySpec(), ramp_pixels(slices=4, rows=64, cols=64)))
    enhanced = enhanced_mr(classic)
    out = synthetic_ct([_save(enhanced, tmp_path / "in")], str(enhanced.SeriesInstanceUID))
    assert len({str(ds.SOPInstanceUID) for ds in out}) == 4
    for k, ds in enumerate(out):
        assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2"
        assert "NumberOfFrames" not in ds and "PerFrameFunctionalGroupsSequence" not in ds
        (source,) = ds.SourceImageSequence
        assert source.ReferencedSOPInstanceUID == enhanced.SOPInstanceUID
        assert source.ReferencedFrameNumber == k + 1
        frame = enhanced.PerFrameFunctionalGroupsSequence[k]
        position = frame.PlanePositionSequence[0].ImagePositionPatient
        assert [float(v) for v in ds.ImagePositionPatient] == [float(v) for v in position]
        (series,) = ds.ReferencedSeriesSequence
        assert len(series.ReferencedInstanceSequence) == 1
    if have("dciodvfy"):
        path = tmp_path / "out.dcm"
        out[0].save_as(path, enforce_file_format=True)
        assert dciodvfy_errors(path) == []
