"""A synthetic series as one multi-frame instance, for routes with ``output_format: enhanced``.

The classes are Legacy Converted Enhanced CT and MR Image Storage (PS3.3 A.70, A.71), not
Enhanced CT and MR (A.38, A.36): those require, for every frame, an Irradiation Event
UID (Irradiation Event Identification, C.7.6.16.2.18) naming an X-ray exposure that never
happened, a coded Frame Anatomy the node does not know, and a Device Serial Number of an
acquisition device there was none of (Enhanced General Equipment, C.7.5.2) — each an
invention, and dciodvfy reports each one missing. The Legacy Converted classes describe
what the node does: it builds the classic frames exactly as :func:`build_series` does for
``classic`` (same pixels, burned-in text and invisible watermark, same marks), then
converts them with highdicom, which puts what differs per frame (position, source image)
in the Per-Frame Functional Groups and the rest in the Shared ones (C.7.6.16).

What the conversion would lose or change is put back as the standard has it for the
multi-frame object: Image Type and every Frame Type read DERIVED\\PRIMARY\\VOLUME\\SYNTHETIC
(C.8.16.1: value 2 can only be PRIMARY, four values only), the Series Description,
Laterality, Source Image Evidence, Contributing Equipment (the synthesizing equipment and
the node as conversion equipment), the provenance block at the top level, an overlay over
every frame when the route's visible mark is ``overlay``, and one signature over the
whole object (the functional groups included).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import Literal

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.sr.codedict import codes
from pydicom.uid import UID, ExplicitVRLittleEndian

from dicom_node import __version__
from dicom_node.dicom.uids import (
    IMPLEMENTATION_CLASS_UID,
    IMPLEMENTATION_VERSION_NAME,
    multi_frame_instance_uid,
)
from dicom_node.evidence.marking import OVERLAY_GROUP, add_overlay
from dicom_node.evidence.provenance import ProvenanceRecord, block_tags, write_private_block
from dicom_node.evidence.signing import sign_dataset
from dicom_node.synthesize.label import CT_IMAGE_STORAGE, SIGNED_KEYWORDS, Marking, build_series
from dicom_node.synthesize.volume import SeriesVolume
from inference.card import ModelCard
from inference.geometry import Volume

OutputFormat = Literal["classic", "enhanced"]

LEGACY_CONVERTED_ENHANCED_CT = "1.2.840.10008.5.1.4.1.1.2.2"
LEGACY_CONVERTED_ENHANCED_MR = "1.2.840.10008.5.1.4.1.1.4.4"
CT_OUTPUT_SOP_CLASSES = frozenset({CT_IMAGE_STORAGE, LEGACY_CONVERTED_ENHANCED_CT})
"""The SOP classes of the node's CT outputs, classic or multi-frame."""

FRAME_TYPE = ("DERIVED", "PRIMARY", "VOLUME", "SYNTHETIC")
"""Image Type and every Frame Type of a multi-frame output (PS3.3 C.8.16.1)."""

CONTENT_QUALIFICATION = "RESEARCH"
"""Content Qualification (Type 1, C.8.15.2): a synthesized image is not a product-grade
acquisition of the scanner it came from."""

ENHANCED_SIGNED_KEYWORDS: tuple[str | int, ...] = (
    *SIGNED_KEYWORDS,
    "ContentQualification",
    "SourceImageEvidenceSequence",
    "SharedFunctionalGroupsSequence",
    "PerFrameFunctionalGroupsSequence",
)
"""The classic output's signed attributes, and those that carry the rest per frame."""

_FRAME_TYPE_SEQUENCES = ("CTImageFrameTypeSequence", "MRImageFrameTypeSequence")
_TOP_LEVEL = (
    "Laterality",
    "LossyImageCompression",
    "LossyImageCompressionRatio",
    "LossyImageCompressionMethod",
)
"""Dropped or put into the Unassigned Shared group by highdicom; General Series holds
Laterality, the Enhanced CT/MR Image Module the lossy compression history."""


def build_output(
    output_format: OutputFormat,
    output: Volume,
    sources: Sequence[SeriesVolume],
    card: ModelCard,
    provenance: ProvenanceRecord,
    marking: Marking,
    now: datetime,
    *,
    uncertainty_map: bool = False,
) -> list[Dataset]:
    """The instances of one output series in the route's format: one per slice
    (``classic``), or the one multi-frame instance (``enhanced``)."""
    if output_format == "classic":
        return build_series(
            output, sources, card, provenance, marking, now, uncertainty_map=uncertainty_map
        )
    return [
        build_multi_frame(
            output, sources, card, provenance, marking, now, uncertainty_map=uncertainty_map
        )
    ]


def build_multi_frame(
    output: Volume,
    sources: Sequence[SeriesVolume],
    card: ModelCard,
    provenance: ProvenanceRecord,
    marking: Marking,
    now: datetime,
    *,
    uncertainty_map: bool = False,
) -> Dataset:
    """The series as one Legacy Converted Enhanced CT or MR instance, marked and signed
    like its classic frames; raises ``ValueError`` as :func:`build_series` does."""
    frames = build_series(
        output,
        sources,
        card,
        provenance,
        replace(marking, signer=None, visible_mark=_pixel_mark(marking)),
        now,
        uncertainty_map=uncertainty_map,
    )
    first = frames[0]
    convert = (
        hd.legacy.LegacyConvertedEnhancedCTImage
        if str(first.SOPClassUID) == CT_IMAGE_STORAGE
        else hd.legacy.LegacyConvertedEnhancedMRImage
    )
    ds = convert(
        frames,
        series_instance_uid=provenance.output_series_uid,
        series_number=int(first.SeriesNumber),
        sop_instance_uid=multi_frame_instance_uid(provenance.output_series_uid),
        instance_number=1,
        transfer_syntax_uid=ExplicitVRLittleEndian,
        strict=True,
        skip_private_attributes=True,
    )
    _restore_marks(ds, first, sources, marking, now)
    write_private_block(ds, provenance)
    if marking.visible_mark == "overlay":
        add_overlay(ds, frames=len(frames))
    if marking.signer is not None:
        signed = ENHANCED_SIGNED_KEYWORDS + _overlay_tags(ds) + block_tags(ds)
        sign_dataset(ds, marking.signer, signed, when=now)
    ds.file_meta.ImplementationClassUID = UID(IMPLEMENTATION_CLASS_UID)
    ds.file_meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    return ds


def _pixel_mark(marking: Marking) -> Literal["burn_in", "none"]:
    """The classic frames get the burned-in text if asked; an overlay is added to the
    multi-frame object as a whole."""
    return "burn_in" if marking.visible_mark == "burn_in" else "none"


def _restore_marks(
    ds: Dataset,
    first: Dataset,
    sources: Sequence[SeriesVolume],
    marking: Marking,
    now: datetime,
) -> None:
    """Puts back what the conversion changes or drops of the classic frames' marks."""
    ds.ImageType = list(FRAME_TYPE)
    groups = [*ds.SharedFunctionalGroupsSequence, *ds.PerFrameFunctionalGroupsSequence]
    for group in groups:
        for keyword in _FRAME_TYPE_SEQUENCES:
            if keyword in group:
                group[keyword].value[0].FrameType = list(FRAME_TYPE)
    ds.ContentQualification = CONTENT_QUALIFICATION
    ds.SeriesDescription = first.SeriesDescription
    ds.BurnedInAnnotation = "YES" if marking.visible_mark == "burn_in" else "NO"
    for keyword in ("InstanceCreationDate", "InstanceCreationTime", "ContentDate", "ContentTime"):
        ds[keyword] = first[keyword]
    unassigned = ds.SharedFunctionalGroupsSequence[0].get(
        "UnassignedSharedConvertedAttributesSequence"
    )
    for keyword in _TOP_LEVEL:
        if unassigned and keyword in unassigned[0]:
            del unassigned[0][keyword]
        if keyword in first:
            ds[keyword] = first[keyword]
    ds.SourceImageEvidenceSequence = _source_evidence(first, sources)
    ds.ContributingEquipmentSequence = [
        *first.ContributingEquipmentSequence,
        _conversion_equipment(marking, now),
    ]


def _source_evidence(first: Dataset, sources: Sequence[SeriesVolume]) -> DicomSequence:
    """Every source instance, by study and series (Hierarchical SOP Instance Reference
    Macro, PS3.3 C.17.2.1): Type 1C in the Enhanced CT/MR Image Module once frames name
    their source images."""
    series = []
    for source in sources:
        instances = {str(h.SOPInstanceUID): str(h.SOPClassUID) for h in source.headers}
        item = Dataset()
        item.SeriesInstanceUID = source.series_uid
        item.ReferencedSOPSequence = [_reference(c, uid) for uid, c in instances.items()]
        series.append(item)
    study = Dataset()
    study.StudyInstanceUID = first.StudyInstanceUID
    study.ReferencedSeriesSequence = series
    return DicomSequence([study])


def _reference(sop_class: str, sop_instance: str) -> Dataset:
    ref = Dataset()
    ref.ReferencedSOPClassUID = sop_class
    ref.ReferencedSOPInstanceUID = sop_instance
    return ref


def _conversion_equipment(marking: Marking, now: datetime) -> Dataset:
    """The node as the equipment that made the multi-frame object of the classic frames
    (Legacy Converted Enhanced IODs, PS3.3 A.70.1)."""
    return hd.ContributingEquipment(
        manufacturer=marking.manufacturer,
        purpose_of_reference=codes.DCM.EnhancedMultiFrameConversionEquipment,
        manufacturer_model_name="dicom-node",
        software_versions=[__version__],
        institution_name=marking.institution_name,
        station_name=marking.station_name,
        contribution_datetime=now,
        contribution_description="classic synthetic frames converted to one multi-frame object",
    )


def _overlay_tags(ds: Dataset) -> tuple[int, ...]:
    return tuple(int(elem.tag) for elem in ds if elem.tag.group == OVERLAY_GROUP)
