"""Shorter polling in pynetdicom while DIMSE traffic flows.

pynetdicom's association and DUL reactor threads poll: each idle turn of their loops
sleeps 1 ms. A C-STORE round trip crosses those loops two or three times, so on
loopback most of an instance's time is spent asleep — profiled with py-spy, the two
reactor threads were asleep for over 90 % of a 300-instance association (see
docs/benchmarks.md). Polling faster all the time would cost CPU for every idle
association (about 9 % of a core each at 0.1 ms), so the node polls fast only while
instances are flowing: each C-STORE sent or received marks the process busy for a
short window, during which those 1 ms polling sleeps last 0.1 ms; longer sleeps
(shutdown delays) are never shortened.

This replaces the ``time`` module *inside* ``pynetdicom.association`` and
``pynetdicom.dul`` with a proxy whose ``sleep`` is adaptive; everything else is the
real ``time``. ``install`` checks that pynetdicom still polls this way and refuses to
patch anything else.
"""

from __future__ import annotations

import time
import types
from typing import Any

import pynetdicom.association
import pynetdicom.dul

POLL_SLEEP_S = 0.001
"""The polling sleep pynetdicom 3 uses in its reactor loops."""
FAST_POLL_S = 0.0003
BUSY_WINDOW_S = 0.25

_last_activity = float("-inf")


def note_activity() -> None:
    """Marks the process busy: polling is fast for the next ``BUSY_WINDOW_S``."""
    global _last_activity
    _last_activity = time.monotonic()


def busy() -> bool:
    return time.monotonic() - _last_activity < BUSY_WINDOW_S


class AdaptiveTime(types.ModuleType):
    """The ``time`` module, but a polling-length sleep is shortened while busy."""

    def __init__(self) -> None:
        super().__init__("time")

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)

    @staticmethod
    def sleep(seconds: float) -> None:
        if seconds <= POLL_SLEEP_S and busy():
            seconds = min(seconds, FAST_POLL_S)
        time.sleep(seconds)


def install() -> None:
    """Gives pynetdicom's reactor modules the adaptive ``time`` (idempotent)."""
    for module in (pynetdicom.association, pynetdicom.dul):
        current = module.__dict__.get("time")
        if isinstance(current, AdaptiveTime):
            continue
        if current is not time:
            raise RuntimeError(
                f"{module.__name__} no longer uses the time module as expected; "
                "dicom_node.net.patches.polling cannot adapt it"
            )
        module.time = AdaptiveTime()  # type: ignore[attr-defined]
