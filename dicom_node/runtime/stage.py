"""What `serve` runs: stages, each with its start-up chores and its work.

A stage is prepared (its start-up chores: reconciliation, clock restarts) before any
stage starts, so that no stage works on a state another's chores are about to correct;
then started; then stopped between units of work. Most stages are polling loops: one
thread per loop, each calling a ``run_once`` that takes one unit of work from storage
and commits its result, and sleeping only when there was none.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from dicom_node.obs.logs import emit, get_logger

log = get_logger("node")

Step = Callable[[], bool]
"""One unit of work; True when there was one (the loop then looks again at once)."""


class Stage(Protocol):
    """A unit `serve --stages` names: it can run alone, in its own process or host."""

    name: str

    def prepare(self) -> None:
        """The stage's start-up chores, before any stage starts."""

    def start(self) -> None:
        """Starts the stage's threads; returns at once."""

    def stop(self, deadline: float) -> None:
        """Stops between units of work, waiting until ``deadline`` (time.monotonic)."""


class _Loop(threading.Thread):
    def __init__(self, name: str, step: Step, poll_s: float, stop: threading.Event) -> None:
        super().__init__(name=name, daemon=True)
        self.step = step
        self.poll_s = poll_s
        self.stop = stop

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                busy = self.step()
            except Exception as exc:  # a stage's outer loop: log, pause, go on
                emit(log, "stage.error", 40, stage=self.name, reason=f"{type(exc).__name__}: {exc}")
                busy = False
            if not busy:
                self.stop.wait(self.poll_s)


class LoopStage:
    """A stage made of polling loops, with its start-up chores."""

    def __init__(
        self,
        name: str,
        loops: Sequence[tuple[str, Step]],
        poll_s: float,
        chores: Sequence[Callable[[], object]] = (),
    ) -> None:
        self.name = name
        self._chores = chores
        self._stop = threading.Event()
        self._threads = [_Loop(loop, step, poll_s, self._stop) for loop, step in loops]

    def prepare(self) -> None:
        for chore in self._chores:
            chore()

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self, deadline: float) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=max(1.0, deadline - time.monotonic()))
