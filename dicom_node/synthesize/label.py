"""Label: an output volume → a synthetic DICOM series that cannot pass for an acquired one.

Classic single-frame CT Image Storage for CT outputs (what treatment planning systems
accept) and MR Image Storage for MR outputs, one instance per slice of the first
input, on its geometry, in its study and Frame of Reference. Every instance carries the
marks of ARCHITECTURE.md: Synthetic Data = YES, Image Type DERIVED\\SECONDARY, a Series
Description prefix, Derivation Description, Source Image Sequence, a Contributing
Equipment item coded (109100, DCM, "Synthesizing Equipment"), and the provenance record
in a private block.

Like highdicom's constructors, :func:`build_series` either returns a complete, valid
series or raises ``ValueError`` naming the problem.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.sr.codedict import codes
from pydicom.uid import UID, ExplicitVRLittleEndian

from dicom_node import __version__
from dicom_node.dicom.attributes import number
from dicom_node.dicom.body_parts import laterality_required
from dicom_node.dicom.lossy import LossyHistory, lossy_history
from dicom_node.dicom.uids import (
    IMPLEMENTATION_CLASS_UID,
    IMPLEMENTATION_VERSION_NAME,
    output_instance_uid,
)
from dicom_node.evidence import watermark
from dicom_node.evidence.keys import Signer
from dicom_node.evidence.marking import OVERLAY_GROUP, VisibleMark, add_overlay, burn_in
from dicom_node.evidence.provenance import ProvenanceRecord, block_tags, write_private_block
from dicom_node.evidence.signed_tags import DEFAULT_SIGNED_KEYWORDS
from dicom_node.evidence.signing import sign_dataset
from dicom_node.synthesize.input_guard import OUT_OF_DISTRIBUTION_MARK
from dicom_node.synthesize.volume import SeriesVolume
from inference.card import ModelCard
from inference.geometry import Volume

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"

PATIENT_AND_STUDY_KEYWORDS = (
    "SpecificCharacterSet",
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "IssuerOfPatientIDQualifiersSequence",
    "PatientBirthDate",
    "PatientSex",
    "OtherPatientIDsSequence",
    "PatientIdentityRemoved",
    "DeidentificationMethod",
    "DeidentificationMethodCodeSequence",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
    "IssuerOfAccessionNumberSequence",
    "StudyDescription",
    "PatientAge",
    "PatientSize",
    "PatientWeight",
    "FrameOfReferenceUID",
    "PositionReferenceIndicator",
    "PatientPosition",
    "BodyPartExamined",
)
"""Copied from the source so the output files under the same patient and study."""

SIGNED_KEYWORDS: tuple[str | int, ...] = (
    *DEFAULT_SIGNED_KEYWORDS,
    "BurnedInAnnotation",
    "ImageComments",
    "ReferencedSeriesSequence",
    "RescaleType",
    "LossyImageCompression",
    "LossyImageCompressionMethod",
    "LossyImageCompressionRatio",
)
"""What the signature covers besides the overlay and the provenance block (whose tags
are found per instance): the signature module's identity, marking and pixel attributes,
and the node's other marks."""

SOURCE_IMAGE_PURPOSE = hd.sr.CodedConcept(
    "121322", "DCM", "Source image for image processing operation"
)


@dataclass(frozen=True)
class Marking:
    """How one output series is labelled (config ``synthetic``, plus the route's visible
    mark) and who signs it."""

    series_description_prefix: str = "SYNTHETIC"
    series_number_offset: int = 9000
    manufacturer: str = "dicom-node"
    institution_name: str | None = None
    station_name: str | None = None
    invisible_watermark: bool = True
    visible_mark: VisibleMark = "overlay"
    signer: Signer | None = None


def _stored_range(card: ModelCard) -> tuple[int, int]:
    """Stored values the output may take: its card's value range, within 16 bits.

    CT is stored as signed 16-bit HU (slope 1, intercept 0), MR as unsigned 16-bit.
    """
    lo, hi = card.output.value_range
    if card.output.modality == "CT":
        return max(-32768, int(np.ceil(lo))), min(32767, int(np.floor(hi)))
    return max(0, int(np.ceil(lo))), min(65535, int(np.floor(hi)))


def _stored_values(values: np.ndarray, card: ModelCard) -> tuple[np.ndarray, int]:
    """Output in physical units → stored integers and Pixel Representation."""
    lo, hi = _stored_range(card)
    rounded = np.clip(np.rint(values), lo, hi)
    if card.output.modality == "CT":
        return rounded.astype(np.int16), 1
    return rounded.astype(np.uint16), 0


def _slice_pixels(stored: np.ndarray, card: ModelCard, marking: Marking, ident: bytes) -> bytes:
    """One slice's Pixel Data: burned-in text if asked, then the invisible watermark."""
    bounds = _stored_range(card)
    pixels = burn_in(stored, bounds) if marking.visible_mark == "burn_in" else stored
    if marking.invisible_watermark:
        pixels = watermark.embed(pixels, ident, value_range=bounds)
    return np.ascontiguousarray(pixels).astype(pixels.dtype.newbyteorder("<")).tobytes()


def _window(stored: np.ndarray, fixed_ct: bool) -> tuple[list[float], list[float], str]:
    if fixed_ct:
        return [40.0, 400.0], [400.0, 1800.0], "SOFT TISSUE\\BONE"
    lo, hi = np.percentile(stored, [1.0, 99.5])
    width = max(float(hi - lo), 1.0)
    return [float(lo + width / 2)], [width], "AUTO"


def _contributing_equipment(card: ModelCard, marking: Marking, when: datetime) -> Dataset:
    return hd.ContributingEquipment(
        manufacturer=marking.manufacturer,
        purpose_of_reference=codes.DCM.SynthesizingEquipment,
        manufacturer_model_name="dicom-node",
        software_versions=[__version__, card.key],
        institution_name=marking.institution_name,
        station_name=marking.station_name,
        contribution_datetime=when,
        contribution_description=f"synthesized by model {card.id} version {card.version}",
    )


def _nearest_slice(source: SeriesVolume, position: np.ndarray) -> int:
    geometry = source.volume.geometry
    normal = np.asarray(geometry.slice_direction)
    offset = float(np.dot(position - np.asarray(geometry.origin), normal))
    return int(np.clip(round(offset / geometry.spacing[0]), 0, geometry.shape[0] - 1))


def _source_images(sources: Sequence[SeriesVolume], k: int) -> DicomSequence:
    """Each input's slice that output slice ``k`` was made from; a frame of a multi-frame
    source is named by its Referenced Frame Number (PS3.3 C.10.3)."""
    position = np.asarray(sources[0].volume.geometry.slice_origin(k))
    items = []
    for i, source in enumerate(sources):
        index = k if i == 0 else _nearest_slice(source, position)
        header = source.headers[index]
        item = Dataset()
        item.ReferencedSOPClassUID = header.SOPClassUID
        item.ReferencedSOPInstanceUID = header.SOPInstanceUID
        frame = source.frames[index] if source.frames else None
        if frame is not None:
            item.ReferencedFrameNumber = frame
        item.PurposeOfReferenceCodeSequence = [SOURCE_IMAGE_PURPOSE]
        items.append(item)
    return DicomSequence(items)


def _referenced_series(sources: Sequence[SeriesVolume]) -> DicomSequence:
    items = []
    for source in sources:
        item = Dataset()
        item.SeriesInstanceUID = source.series_uid
        instances = {str(h.SOPInstanceUID): str(h.SOPClassUID) for h in source.headers}
        item.ReferencedInstanceSequence = [
            _reference(sop_class, uid) for uid, sop_class in instances.items()
        ]
        items.append(item)
    return DicomSequence(items)


def _reference(sop_class: str, sop_instance: str) -> Dataset:
    ref = Dataset()
    ref.ReferencedSOPClassUID = sop_class
    ref.ReferencedSOPInstanceUID = sop_instance
    return ref


UNCERTAINTY_IMAGE_TYPE = "UNCERTAINTY"
"""Image Type value 5 of an uncertainty map series (after DERIVED\\SECONDARY\\…\\SYNTHETIC)."""


def _out_of_distribution(provenance: ProvenanceRecord) -> bool:
    """An input was refused by the guard and the route said ``warn``: synthesized
    anyway, and marked so."""
    return provenance.input_guard is not None and bool(provenance.input_guard.refused)


@dataclass(frozen=True)
class _Labels:
    """The words that say what one series is: the synthetic image, or its uncertainty
    map (the per-voxel spread across test-time augmentation passes)."""

    description: str
    image_type: list[str]
    comments: str
    derivation: str
    series_number_step: int


def _labels(
    card: ModelCard,
    source: Dataset,
    marking: Marking,
    provenance: ProvenanceRecord,
    uncertainty_map: bool,
) -> _Labels:
    base = str(source.get("SeriesDescription", "") or card.input_roles[0])
    flag = " [INPUT OOD]" if _out_of_distribution(provenance) else ""
    what = f"{card.output.role} UNCERTAINTY" if uncertainty_map else card.output.role
    description = f"{marking.series_description_prefix} {what}{flag} from {base} ({card.id})"
    image_type = ["DERIVED", "SECONDARY", "AXIAL" if card.output.modality == "CT" else "OTHER"]
    image_type.append("SYNTHETIC")
    comments = "SYNTHETIC IMAGE - NOT ACQUIRED - " + card.key
    derivation = (
        f"Synthetic {card.output.role} computed by model {card.id} version {card.version} "
        f"from {' + '.join(card.input_roles)}; not an acquired image"
    )
    if uncertainty_map:
        image_type.append(UNCERTAINTY_IMAGE_TYPE)
        comments += f" - UNCERTAINTY MAP in {card.output.units}"
        derivation = (
            f"Per-voxel standard deviation, in {card.output.units}, across the test-time "
            f"augmentation passes of the {derivation[0].lower()}{derivation[1:]}"
        )
    if flag:
        comments += f" - {OUT_OF_DISTRIBUTION_MARK}"
    return _Labels(description[:64], image_type, comments, derivation[:1024], int(uncertainty_map))


def _check(output: Volume, sources: Sequence[SeriesVolume], card: ModelCard) -> None:
    if not sources:
        raise ValueError("sources: at least one source series is needed")
    if len(sources) != len(card.inputs):
        raise ValueError(f"sources: {card.key} has {len(card.inputs)} inputs, got {len(sources)}")
    if not output.geometry.same_grid(sources[0].volume.geometry):
        raise ValueError("output: not on the first source series' grid")
    if not np.all(np.isfinite(output.array)):
        raise ValueError("output: has NaN or infinite values")


def _laterality(ds: Dataset, source: Dataset) -> None:
    """Laterality (Type 2C): only where its condition holds (a paired or unstated body
    part, :mod:`dicom_node.dicom.body_parts`); then the source's value, else empty (unknown)."""
    if laterality_required(source.get("BodyPartExamined")):
        ds.Laterality = source.get("Laterality", None)


def _lossy_compression(ds: Dataset, lossy: LossyHistory) -> None:
    """Lossy Image Compression as the sources had it (General Image Module, Type 3; once
    "01", always "01"); the ratios only where they pair with the methods one to one."""
    ds.LossyImageCompression = lossy.value
    if lossy.methods:
        ds.LossyImageCompressionMethod = list(lossy.methods)
        if len(lossy.ratios) == len(lossy.methods):
            ds.LossyImageCompressionRatio = list(lossy.ratios)


def _modality_module(ds: Dataset, card: ModelCard, source: Dataset) -> None:
    if card.output.modality == "CT":
        ds.RescaleIntercept = 0
        ds.RescaleSlope = 1
        ds.RescaleType = "HU"
        ds.KVP = None
        ds.AcquisitionNumber = None
        return
    ds.ScanningSequence = "RM"
    ds.SequenceVariant = "NONE"
    ds.ScanOptions = None
    ds.MRAcquisitionType = source.get("MRAcquisitionType", None)
    ds.EchoTime = None
    ds.RepetitionTime = None
    ds.EchoTrainLength = None
    ds.MagneticFieldStrength = source.get("MagneticFieldStrength", None)
    ds.AcquisitionNumber = None


def build_series(
    output: Volume,
    sources: Sequence[SeriesVolume],
    card: ModelCard,
    provenance: ProvenanceRecord,
    marking: Marking,
    now: datetime,
    *,
    uncertainty_map: bool = False,
) -> list[Dataset]:
    """One instance per slice of ``sources[0]``, in slice order, ready to be written.

    With ``uncertainty_map``, ``output`` is the per-voxel spread of the synthetic image
    in its units, and the series says so (Series Description, Image Type value
    ``UNCERTAINTY``, Image Comments, Derivation Description) while carrying every mark
    of a synthetic series.
    """
    _check(output, sources, card)
    stored, pixel_representation = _stored_values(output.array, card)
    ct = card.output.modality == "CT"
    centers, widths, explanation = _window(stored, ct and not uncertainty_map)
    series_uid = provenance.output_series_uid
    sop_class = CT_IMAGE_STORAGE if ct else MR_IMAGE_STORAGE
    first = sources[0].headers[0]
    equipment = _contributing_equipment(card, marking, now)
    referenced = _referenced_series(sources)
    date, time = now.strftime("%Y%m%d"), now.strftime("%H%M%S.%f")
    labels = _labels(card, first, marking, provenance, uncertainty_map)
    lossy = lossy_history(h for source in sources for h in source.headers)
    derivation = labels.derivation
    if lossy is not None and lossy.value == "01":
        derivation = f"{derivation}; {lossy.describe()}"[:1024]
    series_number = (number(first, "SeriesNumber") or 0) + marking.series_number_offset
    instances = []
    for k, header in enumerate(sources[0].headers):
        ds = Dataset()
        for keyword in PATIENT_AND_STUDY_KEYWORDS:
            if keyword in header:
                ds[keyword] = header[keyword]
        ds.SOPClassUID = sop_class
        ds.SOPInstanceUID = output_instance_uid(series_uid, sources[0].source_key(k))
        ds.InstanceCreationDate, ds.InstanceCreationTime = date, time
        ds.Modality = card.output.modality
        ds.SeriesInstanceUID = series_uid
        ds.SeriesNumber = series_number + labels.series_number_step
        ds.SeriesDescription = labels.description
        ds.SeriesDate, ds.SeriesTime = date, time
        ds.SyntheticData = "YES"
        _laterality(ds, first)
        ds.Manufacturer = marking.manufacturer
        ds.ManufacturerModelName = "dicom-node"
        ds.SoftwareVersions = [__version__, card.key]
        if marking.institution_name:
            ds.InstitutionName = marking.institution_name
        if marking.station_name:
            ds.StationName = marking.station_name
        ds.ContentDate, ds.ContentTime = date, time
        ds.InstanceNumber = k + 1
        ds.ImageType = labels.image_type
        ds.BurnedInAnnotation = "YES" if marking.visible_mark == "burn_in" else "NO"
        ds.ImageComments = labels.comments
        ds.DerivationDescription = derivation
        if lossy is not None:
            _lossy_compression(ds, lossy)
        ds.SourceImageSequence = _source_images(sources, k)
        ds.ReferencedSeriesSequence = referenced
        ds.ContributingEquipmentSequence = [equipment]
        ds.ImagePositionPatient = [float(v) for v in header.ImagePositionPatient]
        ds.ImageOrientationPatient = [float(v) for v in header.ImageOrientationPatient]
        ds.PixelSpacing = [float(v) for v in header.PixelSpacing]
        ds.SliceThickness = header.get("SliceThickness", None)
        if "SliceLocation" in header:
            ds.SliceLocation = header.SliceLocation
        _modality_module(ds, card, first)
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = stored.shape[1], stored.shape[2]
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
        ds.PixelRepresentation = pixel_representation
        ds.WindowCenter, ds.WindowWidth = centers, widths
        ds.WindowCenterWidthExplanation = explanation.split("\\")[: len(centers)]
        ds.PixelData = _slice_pixels(stored[k], card, marking, provenance.identifier)
        write_private_block(ds, provenance)
        if marking.visible_mark == "overlay":
            add_overlay(ds)
        if marking.signer is not None:
            signed = SIGNED_KEYWORDS + _overlay_tags(ds) + block_tags(ds)
            sign_dataset(ds, marking.signer, signed, when=now)
        ds.file_meta = _file_meta(sop_class, ds.SOPInstanceUID)
        instances.append(ds)
    return instances


def _overlay_tags(ds: Dataset) -> tuple[int, ...]:
    return tuple(int(elem.tag) for elem in ds if elem.tag.group == OVERLAY_GROUP)


def _file_meta(sop_class: str, sop_instance: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = UID(sop_instance)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = UID(IMPLEMENTATION_CLASS_UID)
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    return meta
