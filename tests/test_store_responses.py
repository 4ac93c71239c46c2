"""C-STORE responses encoded directly are byte for byte what pynetdicom would send."""

from __future__ import annotations

import pytest
from pydicom.uid import UID
from pynetdicom.dimse_messages import C_STORE_RSP
from pynetdicom.dimse_primitives import C_STORE

from dicom_node.net.patches.store_responses import encode_store_response


def _response(status: int, instance: str | None, sop_class: str | None, message_id: int) -> C_STORE:
    rsp = C_STORE()
    rsp.MessageIDBeingRespondedTo = message_id
    rsp.Status = status
    if sop_class is not None:
        rsp.AffectedSOPClassUID = UID(sop_class)
    if instance is not None:
        rsp.AffectedSOPInstanceUID = UID(instance)
    return rsp


def _pynetdicom_pdvs(rsp: C_STORE) -> list[tuple[int, bytes]]:
    message = C_STORE_RSP()
    message.primitive_to_message(rsp)
    return [pdv for p in message.encode_msg(7, 16384) for pdv in p.presentation_data_value_list]


@pytest.mark.parametrize("status", [0x0000, 0xB000, 0xA700, 0xC000, 0x0107])
@pytest.mark.parametrize(
    "instance",
    ["1.2.3", "1.2.34", "2.25.102146606615446899917895639747550802312", None],
)
@pytest.mark.parametrize(
    "sop_class", ["1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.4", None]
)
@pytest.mark.parametrize("message_id", [1, 65535])
def test_the_bytes_are_pynetdicoms(
    status: int, instance: str | None, sop_class: str | None, message_id: int
) -> None:
    rsp = _response(status, instance, sop_class, message_id)
    assert _pynetdicom_pdvs(rsp) == [(7, b"\x03" + encode_store_response(rsp))]
