"""The hand-encoded File Meta Information reads back in pydicom exactly as meant."""

from __future__ import annotations

from io import BytesIO

import pydicom
import pytest
from pydicom.filereader import read_preamble

from dicom_node.dicom.filemeta import file_meta
from dicom_node.dicom.uids import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME


@pytest.mark.parametrize("ae", ["STORESCU", "ODD", ""])
@pytest.mark.parametrize("sop", ["1.2.3", "1.2.34"])
def test_file_meta_reads_back(ae: str, sop: str) -> None:
    raw = file_meta("1.2.840.10008.5.1.4.1.1.4", sop, "1.2.840.10008.1.2.1", ae)
    stream = BytesIO(raw + b"\x08\x00\x18\x00UI\x06\x00" + b"1.2.3\x00")
    read_preamble(stream, force=False)
    meta = pydicom.filereader._read_file_meta_info(stream)
    assert meta.MediaStorageSOPClassUID == "1.2.840.10008.5.1.4.1.1.4"
    assert meta.MediaStorageSOPInstanceUID == sop
    assert meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    assert meta.ImplementationClassUID == IMPLEMENTATION_CLASS_UID
    assert meta.ImplementationVersionName == IMPLEMENTATION_VERSION_NAME
    assert meta.FileMetaInformationVersion == b"\x00\x01"
    assert meta.get("SourceApplicationEntityTitle", "") == ae
    assert meta.FileMetaInformationGroupLength == len(raw) - 132 - 12
    ds = pydicom.dcmread(BytesIO(raw + b"\x08\x00\x18\x00UI\x06\x00" + b"1.2.3\x00"))
    assert ds.SOPInstanceUID == "1.2.3"
