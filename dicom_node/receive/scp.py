"""Receive: the node's Application Entity (C-ECHO and C-STORE SCP).

The C-STORE handler does three things and nothing slow: it writes the bytes exactly as
received to the spool (fsync, rename), indexes the instance, and answers. Pixels are
never decoded here; everything else happens in later stages that read the database.
A handler failure is answered with a named failure status (PS3.4 B.2.3), never a
silent success: Cannot Understand only for a data set that can never be indexed,
Out of Resources for every fault that may pass, so the sender keeps the instance.
"""

from __future__ import annotations

import errno
import ipaddress
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from io import BytesIO
from typing import Any, cast

from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset
from pynetdicom import evt
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.events import Event
from pynetdicom.pdu_primitives import A_ASSOCIATE
from pynetdicom.transport import ThreadedAssociationServer
from sqlalchemy.exc import SQLAlchemyError

from dicom_node.config import Config
from dicom_node.dicom.attributes import (
    LAST_INDEXED_TAG,
    HeaderReader,
    series_attributes,
    study_attributes,
)
from dicom_node.dicom.filemeta import file_meta
from dicom_node.dicom.status import (
    RejectReason,
    RejectResult,
    RejectSource,
    StoreStatus,
    VerificationStatus,
)
from dicom_node.net.access import AccessPolicy
from dicom_node.net.ae import listening_ae
from dicom_node.net.patches import polling
from dicom_node.net.tls import server_context
from dicom_node.obs.logs import emit, get_logger
from dicom_node.obs.metrics import INSTANCES_RECEIVED, INSTANCES_REFUSED
from dicom_node.query import dimse
from dicom_node.query.dimse import QueryRetrieveSCP
from storage.database import Database
from storage.instances import ReceivedInstance, record_instance
from storage.spool import Spool, SpoolError, instance_key

log = get_logger("receive")

_UID_PATTERN = re.compile(r"[0-9]+(\.[0-9]+)*")
"""Digits and dots (PS3.5 9.1). Leading zeros in a component, which the standard
forbids but some modalities write, are tolerated: refusing them would refuse studies."""


class InvalidInstance(ValueError):
    """The data set cannot be indexed (missing or malformed identifying UIDs)."""


def _uid(header: HeaderReader, keyword: str) -> str:
    value = header.text(keyword, 65)
    if not value:
        raise InvalidInstance(f"{keyword} is missing")
    if len(value) > 64 or not _UID_PATTERN.fullmatch(value):
        raise InvalidInstance(f"{keyword} is not a valid UID ({len(value)} characters)")
    return value


def describe_instance(
    ds: Dataset,
    sop_class_uid: str,
    sop_instance_uid: str,
    transfer_syntax_uid: str,
    calling_ae: str,
    received_at: datetime,
    size_bytes: int = 0,
) -> ReceivedInstance:
    """What the index needs to know of an instance, from its header only.

    The SOP Class and Instance UIDs come from the C-STORE request's command set
    (PS3.7 9.1.1) and must agree with the data set's own.
    """
    header = HeaderReader(ds)
    study_uid = _uid(header, "StudyInstanceUID")
    series_uid = _uid(header, "SeriesInstanceUID")
    for keyword, expected in (("SOPInstanceUID", sop_instance_uid), ("SOPClassUID", sop_class_uid)):
        own = header.text(keyword, 65)
        if own and own != expected:
            raise InvalidInstance(f"{keyword} {own} differs from the request's {expected}")
    if not _UID_PATTERN.fullmatch(sop_instance_uid) or len(sop_instance_uid) > 64:
        raise InvalidInstance("SOPInstanceUID is not a valid UID")
    return ReceivedInstance(
        study_uid=study_uid,
        series_uid=series_uid,
        sop_instance_uid=sop_instance_uid,
        sop_class_uid=sop_class_uid,
        transfer_syntax_uid=transfer_syntax_uid,
        modality=header.text("Modality", 16),
        spool_key=instance_key(study_uid, series_uid, sop_instance_uid),
        size_bytes=size_bytes,
        calling_ae=calling_ae,
        received_at=received_at,
        study=study_attributes(header),
        series=series_attributes(header),
        instance_number=header.number("InstanceNumber"),
    )


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class StoreHandler:
    """Handles EVT_C_STORE: spool, index, answer.

    Counts the requests it is handling, so that a shutdown can wait for every C-STORE in
    flight to be stored and answered; once draining, new requests are refused (Out of
    Resources) so that the sender keeps them and sends them again later. Every answer is
    counted: ``dicomnode_instances_received_total``, or
    ``dicomnode_instances_refused_total`` by reason (:mod:`dicom_node.obs.metrics`).
    """

    db: Database
    spool: Spool
    min_free_bytes: int
    clock: Callable[[], datetime] = utcnow
    _in_flight: int = 0
    _draining: bool = False
    _idle: threading.Condition = field(default_factory=threading.Condition)

    def __call__(self, event: Event) -> int:
        polling.note_activity()
        with self._idle:
            if self._draining:
                emit(
                    log,
                    "store.refused",
                    30,
                    reason="node shutting down",
                    calling_ae=str(event.assoc.requestor.ae_title).strip(),
                )
                INSTANCES_REFUSED.labels("shutting_down").inc()
                return StoreStatus.OUT_OF_RESOURCES
            self._in_flight += 1
        try:
            return self._store(event)
        except Exception as exc:  # the stage's outer boundary: answer a named failure
            # A fault nobody foresaw may well pass (a resource, a lock, a bug that one
            # input state triggers): Refused, Out of Resources is the class a sender may
            # retry (PS3.4 B.2.3); Cannot Understand would have it drop the instance.
            emit(log, "store.failed", 40, reason=f"unexpected {type(exc).__name__}: {exc}")
            INSTANCES_REFUSED.labels("unexpected_error").inc()
            return StoreStatus.OUT_OF_RESOURCES
        finally:
            with self._idle:
                self._in_flight -= 1
                self._idle.notify_all()

    def drain(self, timeout_s: float) -> bool:
        """Refuses new C-STOREs and waits for those in flight; True when none is left."""
        with self._idle:
            self._draining = True
            return self._idle.wait_for(lambda: self._in_flight == 0, timeout=timeout_s)

    def _store(self, event: Event) -> int:
        req = cast(C_STORE, event.request)
        sop_instance_uid = str(req.AffectedSOPInstanceUID or "")
        calling_ae = str(event.assoc.requestor.ae_title).strip()
        if self.spool.free_bytes() < self.min_free_bytes:
            emit(
                log,
                "store.refused",
                30,
                reason="disk below min_free_bytes",
                sop_instance_uid=sop_instance_uid,
                calling_ae=calling_ae,
            )
            INSTANCES_REFUSED.labels("disk_low").inc()
            return StoreStatus.OUT_OF_RESOURCES
        try:
            rec = describe_instance(
                _header(event),
                sop_class_uid=str(req.AffectedSOPClassUID or ""),
                sop_instance_uid=sop_instance_uid,
                transfer_syntax_uid=str(event.context.transfer_syntax),
                calling_ae=calling_ae,
                received_at=self.clock(),
            )
        except (InvalidInstance, ValueError, EOFError, OSError, KeyError) as exc:
            emit(
                log,
                "store.rejected",
                30,
                reason=f"cannot index: {exc}",
                sop_instance_uid=sop_instance_uid[:64],
                calling_ae=calling_ae,
            )
            INSTANCES_REFUSED.labels("cannot_understand").inc()
            return StoreStatus.CANNOT_UNDERSTAND
        try:
            size = self.spool.write(rec.spool_key, _part10(event, rec))
        except SpoolError as exc:
            reason = "disk full" if exc.errno == errno.ENOSPC else str(exc)
            emit(log, "store.failed", 40, reason=reason, sop_instance_uid=rec.sop_instance_uid)
            INSTANCES_REFUSED.labels("spool_error").inc()
            return StoreStatus.OUT_OF_RESOURCES
        try:
            with self.db.connection() as conn:
                record_instance(conn, _with_size(rec, size))
        except SQLAlchemyError as exc:
            emit(
                log,
                "store.failed",
                40,
                reason=f"database: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}",
                sop_instance_uid=rec.sop_instance_uid,
            )
            INSTANCES_REFUSED.labels("database_error").inc()
            return StoreStatus.OUT_OF_RESOURCES
        emit(
            log,
            "instance.stored",
            10,
            study_uid=rec.study_uid,
            series_uid=rec.series_uid,
            sop_instance_uid=rec.sop_instance_uid,
            calling_ae=calling_ae,
            bytes=size,
        )
        INSTANCES_RECEIVED.inc()
        return StoreStatus.SUCCESS


def _part10(event: Event, rec: ReceivedInstance) -> list[bytes | memoryview]:
    """The data set exactly as received (not copied), behind a File Meta Information
    header (PS3.10 7.1) that also names the sending AE, so the spool file alone says
    where it came from."""
    received = cast(BytesIO, cast(C_STORE, event.request).DataSet)
    meta = file_meta(
        rec.sop_class_uid, rec.sop_instance_uid, rec.transfer_syntax_uid, rec.calling_ae
    )
    return [meta, received.getbuffer()]


def _header(event: Event) -> Dataset:
    """The data set up to the last attribute indexing reads (well before the pixels),
    its elements left raw (``attributes.HeaderReader`` reads them)."""
    syntax = event.context.transfer_syntax
    if syntax.is_deflated:
        return event.dataset
    stream = cast(BytesIO, cast(C_STORE, event.request).DataSet)
    stream.seek(0)
    return read_dataset(
        stream,
        syntax.is_implicit_VR,
        syntax.is_little_endian,
        stop_when=lambda tag, _vr, _length: tag > LAST_INDEXED_TAG,
    )


def _with_size(rec: ReceivedInstance, size: int) -> ReceivedInstance:
    return ReceivedInstance(**{**rec.__dict__, "size_bytes": size})


def _on_echo(event: Event) -> int:
    emit(log, "echo", 10, calling_ae=str(event.assoc.requestor.ae_title).strip())
    return VerificationStatus.SUCCESS


def _on_rejected(event: Event) -> None:
    """Rejections pynetdicom makes itself: the association limit."""
    rq = event.assoc.requestor
    emit(
        log,
        "association.rejected",
        30,
        calling_ae=str(rq.ae_title).strip(),
        address=rq.address,
        reason="too many simultaneous associations",
    )


def _on_requested(policy: AccessPolicy) -> Callable[[Event], None]:
    def check(event: Event) -> None:
        assoc = event.assoc
        calling_ae = str(cast(A_ASSOCIATE, assoc.requestor.primitive).calling_ae_title).strip()
        address = str(assoc.requestor.address)
        reason = policy.refusal(calling_ae, address)
        if reason is None:
            return
        emit(log, "association.rejected", 30, calling_ae=calling_ae, address=address, reason=reason)
        assoc.acse.send_reject(
            RejectResult.PERMANENT, RejectSource.SERVICE_USER, RejectReason.CALLING_AE_UNKNOWN
        )
        assoc.kill()

    return check


def _on_established(event: Event) -> None:
    rq = event.assoc.requestor
    emit(log, "association.accepted", 10, calling_ae=str(rq.ae_title).strip(), address=rq.address)


def _is_loopback(host: str) -> bool:
    """True for an address only this machine can reach (``0.0.0.0`` is every address)."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


class StorageSCP:
    """The listening Application Entity; runs its own threads (one per association)."""

    def __init__(
        self, config: Config, db: Database, spool: Spool, clock: Callable[[], datetime] = utcnow
    ) -> None:
        self.config = config
        self.handler = StoreHandler(db, spool, config.storage.min_free_bytes, clock)
        self.query = QueryRetrieveSCP(config, db, spool)
        self.policy = AccessPolicy.from_config(
            config.node.allowed_calling_aets, config.node.calling_ae_hosts
        )
        self._server: ThreadedAssociationServer | None = None
        self._lock = threading.Lock()

    def start(self) -> tuple[str, int]:
        """Starts listening; returns the bound (host, port) (port 0 picks a free one)."""
        handlers: list[Any] = [
            (evt.EVT_REQUESTED, _on_requested(self.policy)),
            (evt.EVT_C_ECHO, _on_echo),
            (evt.EVT_C_STORE, self.handler),
            (evt.EVT_C_FIND, self.query.on_find),
            (evt.EVT_C_GET, self.query.on_get),
            (evt.EVT_C_MOVE, self.query.on_move),
            (evt.EVT_REJECTED, _on_rejected),
            (evt.EVT_ESTABLISHED, _on_established),
        ]
        node = self.config.node
        tls = server_context(node.tls, self.config.path) if node.tls else None
        server = listening_ae(node, dimse.SOP_CLASSES).start_server(
            (node.host, node.port), block=False, evt_handlers=handlers, ssl_context=tls
        )
        if server is None:
            raise RuntimeError("pynetdicom returned no server for a non-blocking start")
        with self._lock:
            self._server = server
        host, port = server.server_address[:2]
        emit(
            log, "scp.listening", ae_title=node.ae_title, host=host, port=port, tls=tls is not None
        )
        if self.policy.admits_any_ae and not _is_loopback(str(host)):
            emit(
                log,
                "access.open",
                30,
                host=host,
                port=port,
                note="C-STORE is accepted from any calling AE title on a non-loopback address: "
                "list the senders in node.allowed_calling_aets (and node.calling_ae_hosts)",
            )
        return str(host), int(port)

    def active_associations(self) -> int:
        with self._lock:
            server = self._server
        return len(server.active_associations) if server else 0

    def shutdown(self, drain_s: float) -> None:
        """Stops accepting associations, lets every C-STORE in flight be stored and
        answered, then aborts the associations left; their senders resend the rest."""
        with self._lock:
            server = self._server
        if server is None:
            return
        associations = list(server.active_associations)
        server.shutdown()
        drained = self.handler.drain(drain_s)
        for assoc in associations:
            if assoc.is_established:
                assoc.abort()
        with self._lock:
            self._server = None
        emit(log, "scp.stopped", aborted_associations=len(associations), drained=drained)
