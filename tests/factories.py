"""Builders for the DICOM the tests send: realistic MR/CT series with exact geometry."""

from __future__ import annotations

import copy
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from hypothesis.configuration import set_hypothesis_home_dir
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pydicom.valuerep import DSfloat

MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


@dataclass
class StudySpec:
    study_uid: str = field(default_factory=generate_uid)
    frame_of_reference_uid: str = field(default_factory=generate_uid)
    patient_name: str = "Test^Patient"
    patient_id: str = "TEST-0001"
    birth_date: str = "19700101"


def axial_series(
    study: StudySpec,
    pixels: np.ndarray,
    description: str = "T1 MPRAGE",
    modality: str = "MR",
    spacing: tuple[float, float, float] = (2.0, 1.0, 1.0),
    origin: tuple[float, float, float] = (-32.0, -32.0, -10.0),
    orientation: Sequence[float] = (1, 0, 0, 0, 1, 0),
    series_number: int = 3,
    slope: float = 1.0,
    intercept: float = 0.0,
    series_uid: str | None = None,
) -> list[Dataset]:
    """A single-frame series, slice k at ``origin + k·spacing[0]·normal``.

    ``pixels`` holds stored values (k, rows, cols), uint16 for MR, int16 for CT.
    """
    series_uid = series_uid or generate_uid()
    row = np.asarray(orientation[:3], dtype=float)
    col = np.asarray(orientation[3:], dtype=float)
    normal = np.cross(row, col)
    sop_class = MR_IMAGE_STORAGE if modality == "MR" else CT_IMAGE_STORAGE
    out = []
    for k in range(pixels.shape[0]):
        ds = Dataset()
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.SOPClassUID = sop_class
        ds.SOPInstanceUID = generate_uid()
        ds.PatientName = study.patient_name
        ds.PatientID = study.patient_id
        ds.PatientBirthDate = study.birth_date
        ds.PatientSex = "O"
        ds.StudyInstanceUID = study.study_uid
        ds.StudyDate, ds.StudyTime = "20260101", "120000"
        ds.ReferringPhysicianName = ""
        ds.StudyID = "1"
        ds.AccessionNumber = "ACC1"
        ds.Modality = modality
        ds.SeriesInstanceUID = series_uid
        ds.SeriesNumber = series_number
        ds.SeriesDescription = description
        ds.FrameOfReferenceUID = study.frame_of_reference_uid
        ds.PositionReferenceIndicator = ""
        ds.PatientPosition = "HFS"
        ds.Manufacturer = "TestVendor"
        ds.InstanceNumber = k + 1
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        position = np.asarray(origin) + k * spacing[0] * normal
        ds.ImagePositionPatient = [float(v) for v in position]
        ds.ImageOrientationPatient = [float(v) for v in orientation]
        ds.PixelSpacing = [spacing[1], spacing[2]]
        ds.SliceThickness = spacing[0]
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = pixels.shape[1], pixels.shape[2]
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
        ds.PixelRepresentation = 1 if pixels.dtype == np.int16 else 0
        if modality == "MR":
            ds.ScanningSequence, ds.SequenceVariant = "GR", "SP"
            ds.ScanOptions, ds.MRAcquisitionType = "", "3D"
            ds.EchoTime, ds.RepetitionTime, ds.EchoTrainLength = 3.0, 2000.0, 1
        else:
            ds.KVP = 120
            ds.AcquisitionNumber = 1
        if slope != 1.0 or intercept != 0.0 or modality == "CT":
            ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
        ds.PixelData = np.ascontiguousarray(pixels[k]).tobytes()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = sop_class
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        out.append(ds)
    return out


def ramp_pixels(
    slices: int = 8, rows: int = 64, cols: int = 64, dtype: type = np.uint16
) -> np.ndarray:
    """Distinct, predictable stored values: 100 + 10·k + j + i."""
    k, j, i = np.meshgrid(np.arange(slices), np.arange(rows), np.arange(cols), indexing="ij")
    return (100 + 10 * k + j + i).astype(dtype)


def write_series(datasets: Sequence[Dataset], folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for ds in datasets:
        path = folder / f"{ds.SOPInstanceUID}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def rotated_orientation(
    angle_deg: float, axis: Sequence[float], decimals: int = 10
) -> tuple[float, ...]:
    """Image Orientation (Patient) of an axial plane rotated by ``angle_deg`` about ``axis``.

    Rounded to ``decimals`` so that every value is a valid DS (at most 16 characters).
    """
    a = np.asarray(axis, dtype=float)
    a /= np.linalg.norm(a)
    t = np.radians(angle_deg)
    cross = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    rotation = np.eye(3) + np.sin(t) * cross + (1 - np.cos(t)) * (cross @ cross)
    row, col = rotation[:, 0], rotation[:, 1]
    return tuple(round(float(v), decimals) + 0.0 for v in (*row, *col))


def valid_ds(datasets: Sequence[Dataset]) -> list[Dataset]:
    """Rewrites the geometry of ``datasets`` as valid DS strings (≤ 16 characters), as a
    scanner would store them; tests then take expected values from the stored headers."""
    for ds in datasets:
        for keyword in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"):
            ds[keyword].value = [DSfloat(float(v), auto_format=True) for v in ds[keyword].value]
        ds.SliceThickness = DSfloat(abs(float(ds.SliceThickness)), auto_format=True)
    return list(datasets)


def hypothesis_outside_the_tree() -> None:
    """Points Hypothesis' cache (else ./.hypothesis) at a per-user temporary folder, so the
    property tests write nothing into the working tree; HYPOTHESIS_STORAGE_DIRECTORY wins."""
    if "HYPOTHESIS_STORAGE_DIRECTORY" not in os.environ:
        set_hypothesis_home_dir(
            Path(tempfile.gettempdir()) / f"dicom-node-hypothesis-{os.getuid()}"
        )


ENHANCED_MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4.1"


def _item(**attributes: object) -> Dataset:
    item = Dataset()
    for keyword, value in attributes.items():
        setattr(item, keyword, value)
    return item


def enhanced_mr(
    classic: Sequence[Dataset],
    echo_times: Sequence[float] | None = None,
    temporal_positions: Sequence[int] | None = None,
) -> Dataset:
    """The slices of a classic MR series as one Enhanced MR Image Storage object, the way
    Siemens XA and newer Philips scanners write it: orientation, pixel measures and rescale
    in the Shared Functional Groups, each frame's position (and, when given, its echo
    time or temporal position) in the Per-Frame Functional Groups (PS3.3 C.7.6.16)."""
    first = classic[0]
    ds = Dataset()
    skip = {
        "SOPClassUID", "SOPInstanceUID", "InstanceNumber", "ImagePositionPatient",
        "ImageOrientationPatient", "PixelSpacing", "SliceThickness", "RescaleSlope",
        "RescaleIntercept", "PixelData", "EchoTime", "RepetitionTime", "ScanningSequence",
        "SequenceVariant", "ScanOptions", "EchoTrainLength", "ImageType",
    }  # fmt: skip
    for element in first:
        if element.keyword not in skip:
            ds.add(copy.deepcopy(element))
    ds.SOPClassUID = ENHANCED_MR_IMAGE_STORAGE
    ds.SOPInstanceUID = generate_uid()
    ds.InstanceNumber = 1
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "NONE"]
    ds.ContentQualification = "PRODUCT"
    ds.AcquisitionContrast = "T1"
    ds.PulseSequenceName = "TFL"
    ds.NumberOfFrames = len(classic)
    ds.SharedFunctionalGroupsSequence = [
        _item(
            PlaneOrientationSequence=[
                _item(ImageOrientationPatient=list(first.ImageOrientationPatient))
            ],
            PixelMeasuresSequence=[
                _item(PixelSpacing=list(first.PixelSpacing), SliceThickness=first.SliceThickness)
            ],
            PixelValueTransformationSequence=[
                _item(
                    RescaleSlope=first.get("RescaleSlope", 1),
                    RescaleIntercept=first.get("RescaleIntercept", 0),
                    RescaleType="US",
                )
            ],
            MRTimingAndRelatedParametersSequence=[
                _item(RepetitionTime=first.get("RepetitionTime", 2000.0), FlipAngle=9.0)
            ],
        )
    ]
    frames = []
    for k, slice_ in enumerate(classic):
        content = _item(
            StackID="1",
            InStackPositionNumber=k + 1,
            DimensionIndexValues=[1, k + 1],
        )
        if temporal_positions is not None:
            content.TemporalPositionIndex = temporal_positions[k]
        frame = _item(
            FrameContentSequence=[content],
            PlanePositionSequence=[_item(ImagePositionPatient=list(slice_.ImagePositionPatient))],
        )
        if echo_times is not None:
            frame.MREchoSequence = [_item(EffectiveEchoTime=echo_times[k])]
        frames.append(frame)
    ds.PerFrameFunctionalGroupsSequence = frames
    ds.PixelData = b"".join(bytes(s.PixelData) for s in classic)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds
