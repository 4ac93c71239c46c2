"""The DICOM File Meta Information header of a spooled instance, encoded directly.

Every received instance becomes a PS3.10 file: a 128-byte preamble, ``DICM`` and the
group 0002 elements (PS3.10 7.1), always Explicit VR Little Endian. Building those few
elements through pydicom's datasets cost more than the rest of the C-STORE handler, so
they are written here byte by byte; tests read them back with pydicom.
"""

from __future__ import annotations

import struct

from dicom_node.dicom.uids import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME

PREAMBLE = b"\x00" * 128 + b"DICM"


def _short(element: int, vr: bytes, value: bytes, pad: bytes) -> bytes:
    """An element with a 2-byte length (UI, SH, AE, UL), padded to even length."""
    if len(value) % 2:
        value += pad
    return struct.pack("<HH2sH", 0x0002, element, vr, len(value)) + value


def file_meta(
    sop_class_uid: str, sop_instance_uid: str, transfer_syntax_uid: str, source_ae: str
) -> bytes:
    """Preamble, prefix and File Meta Information group for one instance."""
    elements = b"".join(
        (
            struct.pack("<HH2sHI", 0x0002, 0x0001, b"OB", 0, 2) + b"\x00\x01",
            _short(0x0002, b"UI", sop_class_uid.encode("ascii"), b"\x00"),
            _short(0x0003, b"UI", sop_instance_uid.encode("ascii"), b"\x00"),
            _short(0x0010, b"UI", transfer_syntax_uid.encode("ascii"), b"\x00"),
            _short(0x0012, b"UI", IMPLEMENTATION_CLASS_UID.encode("ascii"), b"\x00"),
            _short(0x0013, b"SH", IMPLEMENTATION_VERSION_NAME.encode("ascii"), b" "),
            _short(0x0016, b"AE", source_ae.encode("ascii", "replace"), b" ") if source_ae else b"",
        )
    )
    length = _short(0x0000, b"UL", struct.pack("<I", len(elements)), b"")
    return PREAMBLE + length + elements
