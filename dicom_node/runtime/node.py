"""`dicom-node serve`: the stages `--stages` names (default: all) in one process,
around one database and one spool.

The receive stage runs in pynetdicom's threads; the others each run their loops in
their own threads, polling the database for work. Every stage's start-up chores run
before any stage starts. SIGTERM or SIGINT stops the listener first, lets associations
in progress finish their C-STOREs, then stops the other stages between units of work,
and exits 0. Stages in other processes (or hosts) share only the database and spool.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from types import FrameType

from dicom_node.api.server import ApiStage
from dicom_node.config import Config
from dicom_node.obs.logs import emit, get_logger
from dicom_node.receive.scp import utcnow
from dicom_node.runtime.stages import STAGES, ReceiveStage, Resources, build
from storage.database import Database
from storage.spool import Spool

log = get_logger("node")


class Node:
    """The stages `serve` runs in this process; ``start`` returns once they all run (and,
    with the receive stage, the node accepts associations)."""

    def __init__(
        self,
        config: Config,
        clock: Callable[[], datetime] = utcnow,
        stages: Sequence[str] = STAGES,
    ) -> None:
        unknown = sorted(set(stages) - set(STAGES))
        if unknown or not stages:
            raise ValueError(f"stages must name some of {', '.join(STAGES)}; got {unknown}")
        self.config = config
        self.clock = clock
        self.db = Database(config.database_url)
        self.spool = Spool(config.spool_dir, config.storage.fsync_directory)
        resources = Resources(config, self.db, self.spool, clock)
        self.stages = [build(name, resources) for name in STAGES if name in stages]
        self.address: tuple[str, int] | None = None
        self.api_address: tuple[str, int] | None = None
        """Where the api stage listens (None without it)."""

    def _receive(self) -> ReceiveStage | None:
        return next((s for s in self.stages if isinstance(s, ReceiveStage)), None)

    def start(self) -> tuple[str, int] | None:
        """Runs every stage's chores, then starts them, the listener last; returns its
        address (None without the receive stage)."""
        for stage in self.stages:
            stage.prepare()
        for stage in sorted(self.stages, key=lambda s: isinstance(s, ReceiveStage)):
            stage.start()
        receive = self._receive()
        self.address = receive.address if receive else None
        api = next((s for s in self.stages if isinstance(s, ApiStage)), None)
        self.api_address = api.address if api else None
        return self.address

    def stop(self, drain_s: float = 30.0) -> None:
        """Stops accepting associations, lets C-STOREs in flight finish, then stops the
        stages between units of work; everything else resumes from the database."""
        deadline = time.monotonic() + drain_s
        receive = self._receive()
        if receive is not None:
            receive.stop(deadline)
        for stage in self.stages:
            if stage is not receive:
                stage.stop(deadline)
        self.db.dispose()
        left = receive.scp.active_associations() if receive else 0
        emit(log, "node.stopped", associations_left=left)

    def serve_forever(self) -> None:
        """Runs until SIGTERM or SIGINT, then stops cleanly."""
        done = threading.Event()

        def _on_signal(signum: int, _frame: FrameType | None) -> None:
            emit(log, "node.signal", signal=signal.Signals(signum).name)
            done.set()

        signal.signal(signal.SIGTERM, _on_signal)
        signal.signal(signal.SIGINT, _on_signal)
        address = self.start()
        host, port = address if address else (None, None)
        emit(
            log,
            "node.ready",
            ae_title=self.config.node.ae_title,
            host=host,
            port=port,
            api=f"{self.api_address[0]}:{self.api_address[1]}" if self.api_address else None,
            stages=[s.name for s in self.stages],
        )
        while not done.wait(0.5):
            pass
        self.stop()
