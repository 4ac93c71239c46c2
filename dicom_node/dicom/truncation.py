"""Whether a file pydicom read is whole: the check both the spool's reconciliation and
the volume reader make before they trust a file."""

from __future__ import annotations

from pathlib import Path

from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.uid import DeflatedExplicitVRLittleEndian


def incomplete(ds: Dataset, path: Path) -> str | None:
    """Why a file read as ``ds`` is not whole, or None: its last element must end at the
    end of the file.

    pydicom raises on neither: an element whose declared length runs past the end of the
    file is read as whatever bytes are left, and parsing stops quietly at the first
    element it cannot make sense of — after a length that ran into the next element, the
    rest of the data set, pixels included, is simply missing. Bytes left over are only
    refused when they swallowed the pixels, so that harmless trailing padding still reads.
    """
    if ds.file_meta.get("TransferSyntaxUID") == DeflatedExplicitVRLittleEndian:
        return None  # positions are in the inflated stream, not in the file
    raws = [e for e in ds.elements() if isinstance(e, RawDataElement)]
    if not raws:
        return None
    last = max(raws, key=lambda e: e.value_tell)
    if last.length == 0xFFFFFFFF:  # undefined length: its delimiters were found
        return None
    size = path.stat().st_size
    end = last.value_tell + last.length
    if end > size:
        return (
            f"the file ends inside {last.tag} ({last.length} bytes declared, "
            f"{size - last.value_tell} present): truncated, or an element length is wrong"
        )
    if end < size and "PixelData" not in ds:
        return (
            f"the data set cannot be parsed past {last.tag} (byte {end} of {size}): an "
            "element length is wrong or the file is corrupt"
        )
    return None
