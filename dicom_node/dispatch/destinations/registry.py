"""Destination types → their senders; a destination's ``type`` picks one."""

from __future__ import annotations

from dicom_node.config import Destination
from dicom_node.dispatch.destinations import dimse
from dicom_node.dispatch.destinations.base import Sender

SENDERS: dict[str, Sender] = {"dimse": dimse.send_series}


def sender_for(destination: Destination) -> Sender:
    """The sender of the destination's type (config validation admits only listed ones)."""
    return SENDERS[destination.type]
