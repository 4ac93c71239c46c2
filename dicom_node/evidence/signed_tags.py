"""Which data elements a node's signature covers, and which no signature may cover.

The node signs what says what an object is (identity UIDs, Synthetic Data, Image Type,
derivation, contributing equipment), what it shows (pixel module and Pixel Data) and its
private provenance record, so that stripping or altering the marking is detectable.

Never signable: group lengths (gggg,0000), Length to End, groups below 0008, group FFFA,
the MAC Parameters Sequence, Data Set Trailing Padding and delimiters (refused here, by
tag), and elements of VR UN and sequences containing them (refused by
:mod:`dicom_node.evidence.mac`, which sees the values). Because VR UN cannot be signed, a
verifier that reads an object in Implicit VR must know every signed attribute's VR; DCMTK
3.6.7 does not know Synthetic Data (0008,001C) or the node's private provenance block, so
install :data:`dicom_node.evidence.provenance.DCMTK_DICTIONARY_SUPPLEMENT` (via
``DCMDICTPATH``) wherever DCMTK may transcode or verify the node's objects.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.tag import BaseTag, Tag

from dicom_node.evidence.provenance import PRIVATE_CREATOR as PROVENANCE_PRIVATE_CREATOR
from dicom_node.evidence.provenance import PRIVATE_GROUP as PROVENANCE_GROUP

#: What proves the object's identity, that it is synthetic, and what it shows.
#: Patient and study demographics are deliberately not signed: a PACS may correct them
#: (patient merge, reconciliation) without touching what the node asserted.
DEFAULT_SIGNED_KEYWORDS: tuple[str, ...] = (
    "SpecificCharacterSet",  # how the signed text values are to be read
    "ImageType",
    "SOPClassUID",
    "SOPInstanceUID",
    "SyntheticData",
    "SeriesDescription",
    "DerivationDescription",
    "SourceImageSequence",
    "DerivationCodeSequence",
    "ContributingEquipmentSequence",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "FrameOfReferenceUID",
    "SamplesPerPixel",
    "PhotometricInterpretation",
    "NumberOfFrames",
    "Rows",
    "Columns",
    "PixelSpacing",
    "BitsAllocated",
    "BitsStored",
    "HighBit",
    "PixelRepresentation",
    "PlanarConfiguration",
    "RescaleIntercept",
    "RescaleSlope",
    "PixelData",
)


def tags_to_sign(ds: Dataset, keywords_or_tags: Sequence[str | int] | None) -> list[BaseTag]:
    """The requested tags present in *ds*, with their private creators, in ascending order."""
    if keywords_or_tags is None:
        requested = [_as_tag(keyword) for keyword in DEFAULT_SIGNED_KEYWORDS]
        requested += _provenance_block_tags(ds)
    else:
        requested = [_as_tag(item) for item in keywords_or_tags]
    for tag in requested:
        if not is_signable_tag(tag):
            raise ValueError(f"{tag} may not be signed (PS3.3 C.12.1.1.3.1.1)")
    requested += [_private_creator_tag(tag) for tag in requested if _is_private_data_tag(tag)]
    present = sorted({tag for tag in requested if tag in ds})
    if not present:
        raise ValueError("none of the data elements to be signed is present in the data set")
    return present


def _as_tag(keyword_or_tag: str | int) -> BaseTag:
    """Resolve a DICOM keyword or integer tag to a tag."""
    if isinstance(keyword_or_tag, str):
        tag = tag_for_keyword(keyword_or_tag)
        if tag is None:
            raise ValueError(f"unknown DICOM keyword {keyword_or_tag!r}")
        return BaseTag(tag)
    return Tag(keyword_or_tag)


def _provenance_block_tags(ds: Dataset) -> list[BaseTag]:
    """Private creator and data element tags of every provenance block in *ds*."""
    tags: list[BaseTag] = []
    for block in range(0x10, 0x100):
        creator_tag = BaseTag((PROVENANCE_GROUP << 16) | block)
        if creator_tag in ds and ds[creator_tag].value == PROVENANCE_PRIVATE_CREATOR:
            tags.append(creator_tag)
            tags += [
                tag
                for tag in sorted(ds.keys())
                if tag.group == PROVENANCE_GROUP and tag.element >> 8 == block
            ]
    return tags


def _is_private_data_tag(tag: BaseTag) -> bool:
    return tag.is_private and tag.element >= 0x1000


def _private_creator_tag(tag: BaseTag) -> BaseTag:
    return BaseTag((tag.group << 16) | (tag.element >> 8))


def is_signable_tag(tag: BaseTag) -> bool:
    """Whether PS3.3 C.12.1.1.3.1.1 allows *tag* in a MAC at all (whatever its VR)."""
    return not (
        tag.element == 0x0000
        or tag.group < 0x0008
        or tag == 0x00080001  # Length to End
        or tag.group in (0xFFFA, 0xFFFE)  # Digital Signatures Sequence, delimiters
        or tag == 0x4FFE0001  # MAC Parameters Sequence
        or tag == 0xFFFCFFFC  # Data Set Trailing Padding
    )
