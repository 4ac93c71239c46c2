"""`output_format: enhanced`: a synthetic series as one Legacy Converted Enhanced CT/MR
instance that passes dciodvfy, carries every mark of the classic series (per frame where
it varies), holds the classic slices' pixels frame for frame, verifies, and reads back."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from synthesis import synthetic_series

from dicom_node.evidence.keys import Signer, create_self_signed
from dicom_node.evidence.marking import text_bitmap
from dicom_node.evidence.provenance import read_private_block
from dicom_node.evidence.verify import verify_file
from dicom_node.evidence.watermark import detect
from dicom_node.synthesize.label import Marking
from dicom_node.synthesize.volume import load_series
from factories import StudySpec, axial_series, ramp_pixels, write_series
from onnx_models import linear_card
from peers import dciodvfy_errors

SLICES = 5
LCE_CT = "1.2.840.10008.5.1.4.1.1.2.2"
LCE_MR = "1.2.840.10008.5.1.4.1.1.4.4"
FLAIR = linear_card("mr-t1t2-to-flair", ("T1",), "FLAIR", "MR", value_range=(0, 4095))


@pytest.fixture(scope="module")
def signer(tmp_path_factory: pytest.TempPathFactory) -> Signer:
    folder = tmp_path_factory.mktemp("keys")
    create_self_signed(folder / "k.key", folder / "k.crt", "enhanced output tests")
    return Signer.from_files(folder / "k.key", folder / "k.crt")


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Path], str]:
    """A small oblique-free T1 series with distinct values in every slice."""
    series = axial_series(StudySpec(), ramp_pixels(SLICES, 64, 64), spacing=(2.5, 0.9, 0.8))
    return write_series(series, tmp_path_factory.mktemp("t1")), str(series[0].SeriesInstanceUID)


Build = Callable[..., list[Dataset]]


@pytest.fixture
def build(source: tuple[list[Path], str], signer: Signer) -> Build:
    """Both forms of one output: same values (HU = 2·T1 − 1000 for CT), same marking."""
    paths, uid = source
    now = datetime.now(UTC)
    t1 = load_series(paths, uid).volume.array

    def make(output_format: str, modality: str = "CT", **kwargs: object) -> list[Dataset]:
        card = linear_card() if modality == "CT" else FLAIR
        values = 2 * t1 - 1000 if modality == "CT" else t1 * 3
        mark = "overlay" if modality == "CT" else "burn_in"
        return synthetic_series(
            paths,
            uid,
            card=card,
            values=values,
            marking=Marking(signer=signer, visible_mark=mark),
            now=now,
            output_format=output_format,  # type: ignore[arg-type]
            **kwargs,  # type: ignore[arg-type]
        )

    return make


def _save(ds: Dataset, path: Path) -> Path:
    ds.save_as(path, enforce_file_format=True)
    return path


def _position(values: object) -> tuple[float, ...]:
    return tuple(round(float(v), 3) for v in values)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("modality", "sop_class", "uncertainty_map"),
    [("CT", LCE_CT, False), ("MR", LCE_MR, False), ("CT", LCE_CT, True)],
    ids=["ct", "mr", "ct-uncertainty-map"],
)
def test_enhanced_output_is_one_legacy_converted_instance_that_passes_dciodvfy(
    tmp_path: Path, build: Build, modality: str, sop_class: str, uncertainty_map: bool
) -> None:
    (ds,) = build("enhanced", modality, uncertainty_map=uncertainty_map)
    assert ds.SOPClassUID == sop_class and ds.file_meta.MediaStorageSOPClassUID == sop_class
    assert int(ds.NumberOfFrames) == SLICES
    assert len(ds.PerFrameFunctionalGroupsSequence) == SLICES
    assert dciodvfy_errors(_save(ds, tmp_path / "out.dcm")) == []


def test_enhanced_output_carries_every_synthetic_mark_at_top_level_and_per_frame(
    build: Build,
) -> None:
    classic = build("classic")
    (ds,) = build("enhanced")
    first = classic[0]
    assert ds.SyntheticData == "YES"
    assert list(ds.ImageType) == ["DERIVED", "PRIMARY", "VOLUME", "SYNTHETIC"]
    assert ds.SeriesDescription == first.SeriesDescription
    assert ds.SeriesDescription.startswith("SYNTHETIC ")
    assert ds.SeriesInstanceUID == first.SeriesInstanceUID
    assert ds.SeriesNumber == first.SeriesNumber
    assert ds.BurnedInAnnotation == "NO"
    assert ds.ContentQualification == "RESEARCH"
    purposes = [
        (i.PurposeOfReferenceCodeSequence[0].CodeValue, i.Manufacturer)
        for i in ds.ContributingEquipmentSequence
    ]
    assert purposes == [("109100", "dicom-node"), ("109106", "dicom-node")]
    assert read_private_block(ds) == read_private_block(first)
    (evidence,) = ds.SourceImageEvidenceSequence
    (series,) = evidence.ReferencedSeriesSequence
    assert {r.ReferencedSOPInstanceUID for r in series.ReferencedSOPSequence} == {
        c.SourceImageSequence[0].ReferencedSOPInstanceUID for c in classic
    }
    by_uid = {str(c.SOPInstanceUID): c for c in classic}
    for item in ds.PerFrameFunctionalGroupsSequence:
        frame_type = item.get("CTImageFrameTypeSequence") or ds.SharedFunctionalGroupsSequence[
            0
        ].get("CTImageFrameTypeSequence")
        assert list(frame_type[0].FrameType) == list(ds.ImageType)
        converted = by_uid[item.ConversionSourceAttributesSequence[0].ReferencedSOPInstanceUID]
        (derivation,) = item.DerivationImageSequence
        assert derivation.DerivationDescription == converted.DerivationDescription
        assert "not an acquired image" in derivation.DerivationDescription
        assert (
            derivation.SourceImageSequence[0].ReferencedSOPInstanceUID
            == converted.SourceImageSequence[0].ReferencedSOPInstanceUID
        )
        assert item.FrameContentSequence[0].FrameComments == converted.ImageComments
        position = item.PlanePositionSequence[0].ImagePositionPatient
        assert _position(position) == _position(converted.ImagePositionPatient)


def test_enhanced_frames_hold_the_classic_slices_pixels_watermarked_and_overlaid(
    build: Build,
) -> None:
    classic = build("classic")
    (ds,) = build("enhanced")
    by_uid = {str(c.SOPInstanceUID): c for c in classic}
    frames = ds.pixel_array
    record = read_private_block(ds)
    assert record is not None
    for k, item in enumerate(ds.PerFrameFunctionalGroupsSequence):
        converted = by_uid[item.ConversionSourceAttributesSequence[0].ReferencedSOPInstanceUID]
        assert np.array_equal(frames[k], converted.pixel_array)
        assert detect(frames[k]).identifier == record.identifier
    overlay = np.unpackbits(np.frombuffer(ds[0x60003000].value, np.uint8), bitorder="little")[
        : SLICES * 64 * 64
    ].reshape(SLICES, 64, 64)
    assert int(ds[0x60000015].value) == SLICES
    assert all(np.array_equal(overlay[k], classic[0].overlay_array(0x6000)) for k in range(SLICES))


def test_enhanced_mr_output_has_the_text_burned_into_every_frame(build: Build) -> None:
    (ds,) = build("enhanced", "MR")
    assert ds.BurnedInAnnotation == "YES" and 0x60003000 not in ds
    glyphs = text_bitmap("SYNTHETIC")
    for frame in ds.pixel_array:
        corner = frame[1 : 1 + glyphs.shape[0], 1 : 1 + glyphs.shape[1]]
        assert np.array_equal(corner >= 4094, glyphs)


def test_verify_accepts_the_enhanced_output_and_reports_tampering(
    tmp_path: Path, build: Build
) -> None:
    (ds,) = build("enhanced")
    path = _save(ds, tmp_path / "out.dcm")
    verdict = verify_file(path)
    assert verdict.synthetic and verdict.signature == "valid" and not verdict.tampered
    assert verdict.watermark_matches_provenance is True
    assert verdict.provenance is not None and verdict.provenance["model_id"] == "mr-t1-to-ct"

    moved = pydicom.dcmread(path)
    last = moved.PerFrameFunctionalGroupsSequence[-1].PlanePositionSequence[0]
    last.ImagePositionPatient = [0.0, 0.0, 999.0]
    verdict = verify_file(_save(moved, tmp_path / "moved.dcm"))
    assert verdict.signature == "invalid" and verdict.tampered

    forged = pydicom.dcmread(path)
    block = forged.private_block(0x0071, "DICOM_NODE PROVENANCE")
    block[0x01].value = block[0x01].value.replace("mr-t1-to-ct", "other-model")
    verdict = verify_file(_save(forged, tmp_path / "forged.dcm"))
    assert verdict.signature == "invalid" and verdict.tampered


def test_node_reads_its_enhanced_output_back_as_the_classic_volume(
    tmp_path: Path, build: Build
) -> None:
    classic = build("classic")
    (ds,) = build("enhanced")
    expected = load_series(write_series(classic, tmp_path / "classic"), "classic")
    loaded = load_series([_save(ds, tmp_path / "enhanced.dcm")], "enhanced")
    assert np.array_equal(loaded.volume.array, expected.volume.array)
    assert loaded.volume.geometry.same_grid(expected.volume.geometry)
    assert sorted(loaded.frames) == list(range(1, SLICES + 1))


def test_enhanced_output_uid_is_a_function_of_the_series(build: Build) -> None:
    (first,) = build("enhanced")
    (again,) = build("enhanced")
    assert first.SOPInstanceUID == again.SOPInstanceUID
    assert first.SOPInstanceUID not in {str(c.SOPInstanceUID) for c in build("classic")}
