"""DIMSE status codes the node answers with, named as PS3.4 and PS3.7 name them."""

from enum import IntEnum


class StoreStatus(IntEnum):
    """C-STORE response statuses (PS3.4 Table B.2-1)."""

    SUCCESS = 0x0000
    OUT_OF_RESOURCES = 0xA700
    DATA_SET_DOES_NOT_MATCH_SOP_CLASS = 0xA900
    CANNOT_UNDERSTAND = 0xC000
    COERCION_OF_DATA_ELEMENTS = 0xB000
    ELEMENTS_DISCARDED = 0xB006


SUCCESS_STATUSES = frozenset({0x0000})
WARNING_STATUSES = frozenset({0x0001, 0x0107, 0x0116, *range(0xB000, 0xC000)})


def is_stored(status: int) -> bool:
    """True when a C-STORE response means the peer kept the instance (success or warning)."""
    return status in SUCCESS_STATUSES or status in WARNING_STATUSES
