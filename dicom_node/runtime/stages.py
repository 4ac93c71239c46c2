"""The four stages of the flow, built from their packages for `serve --stages`.

receive: the listening AE (C-ECHO, C-STORE, and Query/Retrieve of what the node holds);
its chore reconciles the spool with the index. route: stable studies → jobs; its chore
restarts the stability clocks of studies still receiving. synthesize: jobs → written
output series. dispatch: written series released and their deliveries queued (the
outbox), then sent. api: the REST API, the dashboard and /metrics. They share nothing
but the database and the spool.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from dicom_node.api.context import WebContext
from dicom_node.api.server import ApiStage
from dicom_node.config import Config
from dicom_node.dispatch.dispatcher import Dispatcher
from dicom_node.dispatch.outbox import Outbox
from dicom_node.evidence.keys import Signer, create_self_signed
from dicom_node.obs.logs import emit, get_logger
from dicom_node.obs.metrics import note_providers
from dicom_node.receive.reconcile import reconcile_spool
from dicom_node.receive.scp import StorageSCP
from dicom_node.route.assembly import restart_stability_clocks
from dicom_node.route.scheduler import Scheduler
from dicom_node.runtime.stage import LoopStage, Stage
from dicom_node.synthesize.job import Synthesizer
from inference.registry import Registry, load_registry
from storage.database import Database
from storage.spool import Spool

log = get_logger("node")

STAGES = ("receive", "route", "synthesize", "dispatch", "api")
"""Every stage, in the order of the flow; `serve` runs them all unless told otherwise."""


def load_models(config: Config) -> Registry:
    """The model registry, with every refusal and every route without a model logged,
    and the providers each model runs on in ``dicomnode_inference_provider_info``."""
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
        note_providers(model.card.key, model.providers)
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


@dataclass
class Resources:
    """What the stages share in one process: configuration, database, spool, clock, and
    the models (loaded once, only when a stage that needs them runs)."""

    config: Config
    db: Database
    spool: Spool
    clock: Callable[[], datetime]
    _registry: Registry | None = None

    @property
    def registry(self) -> Registry:
        if self._registry is None:
            self._registry = load_models(self.config)
        return self._registry


class ReceiveStage:
    """The listening AE; its chore indexes spool files that lack a row."""

    name = "receive"

    def __init__(self, res: Resources) -> None:
        self.res = res
        self.scp = StorageSCP(res.config, res.db, res.spool, res.clock)
        self.address: tuple[str, int] | None = None

    def prepare(self) -> None:
        reconcile_spool(self.res.db, self.res.spool, self.res.clock)

    def start(self) -> None:
        self.address = self.scp.start()

    def stop(self, deadline: float) -> None:
        """Stops accepting associations and lets the C-STOREs in flight finish."""
        self.scp.shutdown(max(0.0, deadline - time.monotonic()))


def _route(res: Resources) -> Stage:
    scheduler = Scheduler(res.config, res.db, res.spool, res.registry.cards, res.clock)
    return LoopStage(
        "route",
        [("schedule", scheduler.run_once)],
        res.config.scheduler.poll_seconds,
        chores=[lambda: restart_stability_clocks(res.db, res.clock)],
    )


def _synthesize(res: Resources) -> Stage:
    signer = load_signer(res.config)
    workers = [
        Synthesizer(res.config, res.db, res.spool, res.registry, res.clock, signer)
        for _ in range(res.config.inference.workers)
    ]
    return LoopStage(
        "synthesize",
        [(f"synthesize-{i}", w.run_once) for i, w in enumerate(workers)],
        res.config.scheduler.poll_seconds,
    )


def _dispatch(res: Resources) -> Stage:
    reviewed = [route.model for route in res.config.routes if route.review]
    outbox = Outbox(res.db, res.clock, reviewed)
    dispatchers = [
        Dispatcher(res.config, res.db, res.spool, res.clock)
        for _ in range(res.config.dispatch.workers)
    ]
    return LoopStage(
        "dispatch",
        [("outbox", outbox.run_once)]
        + [(f"dispatch-{i}", d.run_once) for i, d in enumerate(dispatchers)],
        res.config.scheduler.poll_seconds,
    )


def _api(res: Resources) -> Stage:
    return ApiStage(WebContext(res.config, res.db, res.spool, res.clock))


def build(name: str, res: Resources) -> Stage:
    """The stage called ``name`` (one of :data:`STAGES`)."""
    if name == "receive":
        return ReceiveStage(res)
    builders = {"route": _route, "synthesize": _synthesize, "dispatch": _dispatch, "api": _api}
    return builders[name](res)
