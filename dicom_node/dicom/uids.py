"""Deterministic UIDs for what the node produces.

The same inputs through the same model version always give the same Series and SOP
Instance UIDs, so a re-run (a resent study, a restart mid-way) replaces its earlier
output at the destination instead of adding a second series. The series UID comes from
the input series UIDs, the model id and its version; each instance's from the series
UID and the SOP Instance UID of the source slice it was made from. UIDs take the 2.25 form
(PS3.5 B.2): the decimal value of a UUID, here a name-based UUID version 8 (RFC 9562)
built from a SHA-256 of the names.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence

from dicom_node import __version__


def uid_from_names(*names: str) -> str:
    """A 2.25 UID that is a pure function of ``names``."""
    digest = bytearray(hashlib.sha256("\x00".join(names).encode("utf-8")).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x80  # version 8
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 9562 variant
    return f"2.25.{uuid.UUID(bytes=bytes(digest)).int}"


def output_series_uid(input_series_uids: Sequence[str], model_id: str, model_version: str) -> str:
    return uid_from_names("series", *input_series_uids, model_id, model_version)


def uncertainty_series_uid(output_series: str) -> str:
    """The uncertainty map series of the output series ``output_series``: derived from it,
    so it is as deterministic as the output and a re-run replaces it too."""
    return uid_from_names("uncertainty map", output_series)


def output_instance_uid(output_series: str, source_instance_uid: str) -> str:
    """The output instance made from the first input's slice ``source_instance_uid``.

    Tied to the source slice rather than to a slice index: when a study gains slices
    after its output was delivered and the job runs again, every output instance keeps
    the UID of the same position, so a destination that keeps first copies never ends
    with two different slices under one UID or one position under two UIDs.
    """
    return uid_from_names("instance", output_series, source_instance_uid)


def multi_frame_instance_uid(output_series: str) -> str:
    """The one instance of an output series written as a multi-frame object
    (``output_format: enhanced``): a function of the series, so a re-run replaces it."""
    return uid_from_names("multi-frame instance", output_series)


IMPLEMENTATION_VERSION_NAME = f"DICOMNODE_{__version__}"[:16]
IMPLEMENTATION_CLASS_UID = uid_from_names("dicom-node", "implementation class")
"""Identifies this software in association negotiation and in File Meta Information."""
