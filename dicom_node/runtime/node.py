"""`dicom-node serve`: every stage in one process, around one database and one spool.

The receive stage runs in pynetdicom's threads; the scheduler, the synthesis workers and
the dispatchers each run in their own thread, polling the database for work. SIGTERM
or SIGINT stops the listener first, lets associations in progress finish their C-STOREs,
then stops the stages between units of work, and exits 0.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from datetime import datetime
from types import FrameType

from dicom_node.config import Config
from dicom_node.dispatch.dispatcher import Dispatcher
from dicom_node.evidence.keys import Signer, create_self_signed
from dicom_node.obs.logs import emit, get_logger
from dicom_node.receive.reconcile import reconcile_spool, restart_stability_clocks
from dicom_node.receive.scp import StorageSCP, utcnow
from dicom_node.route.scheduler import Scheduler
from dicom_node.synthesize.job import Synthesizer
from inference.registry import Registry, load_registry
from storage.database import Database
from storage.spool import Spool

log = get_logger("node")


def load_models(config: Config) -> Registry:
    """The model registry, with every refusal and every route without a model logged."""
    registry = load_registry(
        config.models_dir, config.inference.providers, config.inference.intra_op_threads
    )
    if registry.providers is not None:
        emit(
            log,
            "inference.providers",
            providers_requested=list(registry.providers.requested),
            providers_in_use=list(registry.providers.in_use),
            unusable=registry.providers.unusable,
        )
    for problem in registry.refused:
        emit(log, "model.refused", 30, problem=problem)
    for model in registry:
        emit(
            log,
            "model.loaded",
            model=model.card.key,
            file=model.path.name,
            inputs=list(model.card.input_roles),
            output=model.card.output.role,
            providers_requested=config.inference.providers,
            providers_in_use=list(model.providers),
        )
    if not registry.models:
        emit(
            log,
            "model.none",
            30,
            models_dir=str(config.models_dir),
            note="no usable model: the node stores what it receives and synthesizes nothing",
        )
    for route in config.routes:
        if registry.get(route.model) is None:
            emit(log, "route.inactive", 30, model=route.model, reason="model not loaded")
    return registry


def load_signer(config: Config) -> Signer:
    """The key and certificate that sign every output; on a first run, when neither file
    exists, a self-signed pair is made (and logged) so that the node runs as is."""
    settings = config.signing
    key, cert = config.path(settings.key_file), config.path(settings.certificate_file)
    if not key.exists() and not cert.exists():
        create_self_signed(key, cert, common_name=f"{config.node.ae_title} dicom-node signing")
        emit(
            log,
            "signing.key_created",
            30,
            key_file=str(key),
            certificate_file=str(cert),
            note="self-signed; replace with a certificate your institution issues",
        )
    password_env = settings.key_password_env
    password = os.environ.get(password_env, "").encode() if password_env else None
    signer = Signer.from_files(key, cert, password or None)
    emit(log, "signing.ready", subject=signer.subject, certificate_file=str(cert))
    return signer


class _StageLoop(threading.Thread):
    def __init__(
        self, name: str, step: Callable[[], bool], poll_s: float, stop: threading.Event
    ) -> None:
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


class Node:
    """Everything `serve` runs; ``start`` returns once the node accepts associations."""

    def __init__(self, config: Config, clock: Callable[[], datetime] = utcnow) -> None:
        self.config = config
        self.clock = clock
        self.db = Database(config.database_url)
        self.spool = Spool(config.spool_dir, config.storage.fsync_directory)
        self.registry = load_models(config)
        self.signer = load_signer(config)
        self.scp = StorageSCP(config, self.db, self.spool, clock)
        self._stop = threading.Event()
        self._threads: list[_StageLoop] = []
        self.address: tuple[str, int] | None = None

    def start(self) -> tuple[str, int]:
        reconcile_spool(self.db, self.spool, self.clock)
        restart_stability_clocks(self.db, self.clock)
        poll = self.config.scheduler.poll_seconds
        scheduler = Scheduler(self.config, self.db, self.spool, self.registry.cards, self.clock)
        self._threads.append(_StageLoop("schedule", scheduler.run_once, poll, self._stop))
        for i in range(self.config.inference.workers):
            worker = Synthesizer(
                self.config, self.db, self.spool, self.registry, self.clock, self.signer
            )
            self._threads.append(_StageLoop(f"synthesize-{i}", worker.run_once, poll, self._stop))
        for i in range(self.config.dispatch.workers):
            dispatcher = Dispatcher(self.config, self.db, self.spool, self.clock)
            self._threads.append(_StageLoop(f"dispatch-{i}", dispatcher.run_once, poll, self._stop))
        for thread in self._threads:
            thread.start()
        self.address = self.scp.start()
        return self.address

    def stop(self, drain_s: float = 30.0) -> None:
        """Stops accepting associations, lets C-STOREs in flight finish, then stops the
        stages between units of work; everything else resumes from the database."""
        deadline = time.monotonic() + drain_s
        self.scp.shutdown(drain_s)
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=max(1.0, deadline - time.monotonic()))
        self.db.dispose()
        emit(log, "node.stopped", associations_left=self.scp.active_associations())

    def serve_forever(self) -> None:
        """Runs until SIGTERM or SIGINT, then stops cleanly."""
        done = threading.Event()

        def _on_signal(signum: int, _frame: FrameType | None) -> None:
            emit(log, "node.signal", signal=signal.Signals(signum).name)
            done.set()

        signal.signal(signal.SIGTERM, _on_signal)
        signal.signal(signal.SIGINT, _on_signal)
        host, port = self.start()
        emit(log, "node.ready", ae_title=self.config.node.ae_title, host=host, port=port)
        while not done.wait(0.5):
            pass
        self.stop()
