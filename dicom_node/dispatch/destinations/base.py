"""What every destination type shares: the sender's signature and its failure."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from dicom_node.config import Config, Destination


class DeliveryError(RuntimeError):
    """A send did not succeed; the message says what the destination did."""


class Sender(Protocol):
    """Sends one output series (its instance files, in order) to ``destination``; returns
    how many instances were stored, or raises saying which one was not."""

    def __call__(
        self, destination: Destination, paths: Sequence[Path], sop_class_uid: str, config: Config
    ) -> int: ...
