"""Storage SOP classes by what their instances are to the node (PS3.4 B.5).

A series is the unit a scanner sends, not the unit of one kind of object: Philips puts a
Raw Data Storage instance (and private Series Data objects) into the image series,
Siemens a CSA Non-Image object, workstations presentation states and reports. Only the
image SOP classes below make a volume; everything else in a series is kept, indexed
and retrievable, and left out of synthesis.
"""

from __future__ import annotations

VOLUME_IMAGE_SOP_CLASSES = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.2",  # CT Image Storage
        "1.2.840.10008.5.1.4.1.1.2.1",  # Enhanced CT Image Storage
        "1.2.840.10008.5.1.4.1.1.2.2",  # Legacy Converted Enhanced CT Image Storage
        "1.2.840.10008.5.1.4.1.1.4",  # MR Image Storage
        "1.2.840.10008.5.1.4.1.1.4.1",  # Enhanced MR Image Storage
        "1.2.840.10008.5.1.4.1.1.4.4",  # Legacy Converted Enhanced MR Image Storage
        "1.2.840.10008.5.1.4.1.1.128",  # Positron Emission Tomography Image Storage
        "1.2.840.10008.5.1.4.1.1.128.1",  # Legacy Converted Enhanced PET Image Storage
        "1.2.840.10008.5.1.4.1.1.130",  # Enhanced PET Image Storage
    }
)
"""Cross-sectional grayscale images with patient geometry: what a volume is made of."""

ENHANCED_SOP_CLASSES = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.2.1",
        "1.2.840.10008.5.1.4.1.1.2.2",
        "1.2.840.10008.5.1.4.1.1.4.1",
        "1.2.840.10008.5.1.4.1.1.4.4",
        "1.2.840.10008.5.1.4.1.1.128.1",
        "1.2.840.10008.5.1.4.1.1.130",
    }
)
"""Multi-frame classes whose geometry lives in functional groups (PS3.3 C.7.6.16)."""

VENDOR_PRIVATE_STORAGE_SOP_CLASSES = {
    "1.3.12.2.1107.5.9.1": "SiemensCSANonImageStorage",
    "1.3.46.670589.11.0.0.12.1": "PhilipsPrivateMRSeriesDataStorage",
    "1.3.46.670589.11.0.0.12.2": "PhilipsPrivateMRSpectrumStorage",
    "1.3.46.670589.11.0.0.12.4": "PhilipsPrivateMRExamcardStorage",
}
"""Private objects the big vendors put into image series, with a keyword for each:
accepted so that a PACS forwarding a whole study is not refused for them (they are kept,
never decoded)."""


def is_volume_image(sop_class_uid: str) -> bool:
    """Whether instances of this SOP class can be slices (or frames) of a volume."""
    return sop_class_uid in VOLUME_IMAGE_SOP_CLASSES
