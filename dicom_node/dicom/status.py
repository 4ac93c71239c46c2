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


class VerificationStatus(IntEnum):
    """C-ECHO response statuses (PS3.7 9.1.5.1.4)."""

    SUCCESS = 0x0000
    REFUSED_SOP_CLASS_NOT_SUPPORTED = 0x0122


class QueryRetrieveStatus(IntEnum):
    """C-FIND, C-GET and C-MOVE response statuses (PS3.4 C.4.1.1.4, C.4.2.1.5, C.4.3.1.4;
    PS3.7 C.5 for the general ones)."""

    SUCCESS = 0x0000
    NOT_AUTHORIZED = 0x0124
    """Refused: Not Authorized (PS3.7 C.5.x): the calling AE may not query or retrieve."""
    MOVE_DESTINATION_UNKNOWN = 0xA801
    IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS = 0xA900
    SUB_OPERATIONS_COMPLETE_WITH_FAILURES = 0xB000
    """Warning: some sub-operations failed; the Failed SOP Instance UID List names them."""
    CANCEL = 0xFE00
    PENDING = 0xFF00


SUCCESS_STATUSES = frozenset({0x0000})
WARNING_STATUSES = frozenset({0x0001, 0x0107, 0x0116, *range(0xB000, 0xC000)})


def is_stored(status: int) -> bool:
    """True when a C-STORE response means the peer kept the instance (success or warning)."""
    return status in SUCCESS_STATUSES or status in WARNING_STATUSES


class RejectResult(IntEnum):
    """A-ASSOCIATE-RJ Result (PS3.8 9.3.4)."""

    PERMANENT = 0x01
    TRANSIENT = 0x02


class RejectSource(IntEnum):
    """A-ASSOCIATE-RJ Source (PS3.8 9.3.4)."""

    SERVICE_USER = 0x01
    SERVICE_PROVIDER_ACSE = 0x02
    SERVICE_PROVIDER_PRESENTATION = 0x03


class RejectReason(IntEnum):
    """A-ASSOCIATE-RJ Reason/Diag. when the source is the service user (PS3.8 9.3.4)."""

    NO_REASON = 0x01
    APPLICATION_CONTEXT_NOT_SUPPORTED = 0x02
    CALLING_AE_UNKNOWN = 0x03
    CALLED_AE_UNKNOWN = 0x07
