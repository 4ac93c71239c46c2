"""C-STORE responses encoded directly, without building a pydicom data set.

pynetdicom turns every response primitive into a pydicom ``Dataset`` (each element set
through pydicom's value validation) and encodes it twice — once to measure the Command
Group Length, once to send it. For a C-STORE-RSP that was about a third of the node
process's CPU time per received instance (yappi, docs/benchmarks.md), for seven fixed
elements. A
plain C-STORE-RSP (no Offending Element or Error Comment) is therefore written here as
the bytes PS3.7 E.1 defines — Implicit VR Little Endian, elements in tag order, UIDs
padded with a NUL to even length — and handed to the DUL as one P-DATA primitive, the
same bytes pynetdicom would send (``tests/test_store_responses.py`` compares them).
Anything else, or an association with an ``EVT_DIMSE_SENT`` handler that wants the
message object, goes through pynetdicom unchanged.
"""

from __future__ import annotations

import struct
from typing import Any

from pynetdicom import evt
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.pdu_primitives import P_DATA

_ORIGINAL = DIMSEServiceProvider.send_msg

C_STORE_RSP = 0x8001
NO_DATA_SET = 0x0101
_LAST_COMMAND_FRAGMENT = b"\x03"
"""Message Control Header: command information, last fragment (PS3.8 E.2)."""


def _element(element: int, value: bytes) -> bytes:
    return struct.pack("<HHI", 0x0000, element, len(value)) + value


def _uid(value: str) -> bytes:
    raw = value.encode("ascii")
    return raw + b"\x00" if len(raw) % 2 else raw


def encode_store_response(primitive: C_STORE) -> bytes:
    """The command set of a plain C-STORE-RSP (PS3.7 9.3.1.2), Implicit VR LE."""
    body = b""
    if primitive.AffectedSOPClassUID is not None:
        body += _element(0x0002, _uid(str(primitive.AffectedSOPClassUID)))
    body += _element(0x0100, struct.pack("<H", C_STORE_RSP))
    body += _element(0x0120, struct.pack("<H", primitive.MessageIDBeingRespondedTo))
    body += _element(0x0800, struct.pack("<H", NO_DATA_SET))
    body += _element(0x0900, struct.pack("<H", primitive.Status))
    if primitive.AffectedSOPInstanceUID is not None:
        body += _element(0x1000, _uid(str(primitive.AffectedSOPInstanceUID)))
    return _element(0x0000, struct.pack("<I", len(body))) + body


def _plain_store_response(self: DIMSEServiceProvider, primitive: Any) -> bool:
    return (
        type(primitive) is C_STORE
        and primitive.MessageIDBeingRespondedTo is not None
        and primitive.Status is not None
        and primitive.OffendingElement is None
        and primitive.ErrorComment is None
        and not self.assoc.get_handlers(evt.EVT_DIMSE_SENT)
    )


def send_msg(self: DIMSEServiceProvider, primitive: Any, context_id: int) -> None:
    """``DIMSEServiceProvider.send_msg``, with plain C-STORE responses encoded here."""
    if not _plain_store_response(self, primitive):
        _ORIGINAL(self, primitive, context_id)
        return
    command = encode_store_response(primitive)
    limit = self.maximum_pdu_size
    if limit and len(command) + 1 > limit - 6:
        _ORIGINAL(self, primitive, context_id)
        return
    pdata = P_DATA()
    pdata.presentation_data_value_list.append((context_id, _LAST_COMMAND_FRAGMENT + command))
    self.dul.send_pdu(pdata)


def install() -> None:
    """Gives pynetdicom's DIMSE provider this ``send_msg`` (idempotent); refuses to patch
    a ``send_msg`` that is not the one this was written against."""
    current: Any = DIMSEServiceProvider.send_msg
    if current is send_msg:
        return
    if current is not _ORIGINAL or current.__qualname__ != "DIMSEServiceProvider.send_msg":
        raise RuntimeError(
            "pynetdicom's DIMSEServiceProvider.send_msg is not the one "
            "dicom_node.net.patches.store_responses wraps; refusing to patch it"
        )
    DIMSEServiceProvider.send_msg = send_msg  # type: ignore[method-assign]
