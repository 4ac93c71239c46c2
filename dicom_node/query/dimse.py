"""Query/Retrieve SCP: workstations find and fetch what the node holds — the studies it
received and the synthetic series it made — with C-FIND, C-GET and C-MOVE.

Patient Root and Study Root information models (PS3.4 C.6); what a C-FIND matches and
what a C-GET or C-MOVE names is decided by :mod:`dicom_node.query.matching`. Retrieval
reads the spool files and sends them as stored.

Nobody may query or retrieve unless listed in ``query_retrieve.allowed_calling_aets``
(and, where bound, calling from one of its ``calling_ae_hosts``): the answers carry
patient data. Others are answered Refused: Not Authorized (0124, PS3.7 C.5) for C-FIND
and C-GET; for C-MOVE pynetdicom lets a handler refuse only as Move Destination Unknown
(A801), which it then is for that caller.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pynetdicom import build_context
from pynetdicom.events import Event

from dicom_node.config import Config
from dicom_node.dicom.status import QueryRetrieveStatus
from dicom_node.net.access import AccessPolicy
from dicom_node.net.ae import UNCOMPRESSED
from dicom_node.net.tls import tls_args
from dicom_node.obs.logs import emit, get_logger
from dicom_node.query.matching import QueryError, find, retrieve_keys
from storage.database import Database
from storage.spool import Spool

log = get_logger("query")

SOP_CLASSES = (
    "1.2.840.10008.5.1.4.1.2.1.1",  # Patient Root FIND
    "1.2.840.10008.5.1.4.1.2.1.2",  # Patient Root MOVE
    "1.2.840.10008.5.1.4.1.2.1.3",  # Patient Root GET
    "1.2.840.10008.5.1.4.1.2.2.1",  # Study Root FIND
    "1.2.840.10008.5.1.4.1.2.2.2",  # Study Root MOVE
    "1.2.840.10008.5.1.4.1.2.2.3",  # Study Root GET
)


class QueryRetrieveSCP:
    """The C-FIND, C-GET and C-MOVE handlers of the node's AE."""

    def __init__(self, config: Config, db: Database, spool: Spool) -> None:
        self.config = config
        self.db = db
        self.spool = spool
        settings = config.query_retrieve
        self.unreleased = settings.serve_unreleased_outputs
        self.policy = AccessPolicy.from_config(
            settings.allowed_calling_aets,
            settings.calling_ae_hosts,
            open_when_empty=False,
            key="query_retrieve.allowed_calling_aets",
        )

    def _refused(self, event: Event, service: str) -> bool:
        """True (and logged) when the calling AE may not use Query/Retrieve."""
        requestor = event.assoc.requestor
        calling_ae = str(requestor.ae_title).strip()
        reason = self.policy.refusal(calling_ae, str(requestor.address))
        if reason is None:
            return False
        emit(
            log,
            "query.refused",
            30,
            service=service,
            calling_ae=calling_ae,
            address=str(requestor.address),
            reason=reason,
        )
        return True

    def on_find(self, event: Event) -> Iterator[tuple[int, Dataset | None]]:
        if self._refused(event, "C-FIND"):
            yield QueryRetrieveStatus.NOT_AUTHORIZED, None
            return
        identifier = event.identifier
        try:
            with self.db.session() as session:
                answers = list(find(session, identifier, self.unreleased))
        except QueryError as exc:
            emit(log, "find.refused", 30, reason=str(exc))
            yield QueryRetrieveStatus.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS, None
            return
        emit(
            log,
            "find",
            query_level=str(identifier.get("QueryRetrieveLevel", "")),
            matches=len(answers),
            calling_ae=str(event.assoc.requestor.ae_title).strip(),
        )
        for answer in answers:
            if event.is_cancelled:
                yield QueryRetrieveStatus.CANCEL, None
                return
            yield QueryRetrieveStatus.PENDING, answer

    def _instances(self, event: Event) -> list[tuple[str, str, str, str]] | None:
        try:
            with self.db.session() as session:
                return retrieve_keys(session, event.identifier, self.unreleased)
        except QueryError as exc:
            emit(log, "retrieve.refused", 30, reason=str(exc))
            return None

    def _datasets(
        self, event: Event, keys: Sequence[tuple[str, str, str, str]]
    ) -> Iterator[tuple[int, Dataset | None]]:
        """The C-STORE sub-operations' data sets. A spool file that cannot be read costs
        its own instance only: the rest are sent, and the final response is a Warning
        whose Failed SOP Instance UID List names the unread ones (PS3.4 C.4.2.1.5,
        C.4.3.1.4); pynetdicom counts them as failed sub-operations."""
        unread: list[str] = []
        for key, _, _, sop_instance_uid in keys:
            if event.is_cancelled:
                yield QueryRetrieveStatus.CANCEL, None
                return
            try:
                dataset = pydicom.dcmread(self.spool.path(key))
            except (OSError, ValueError, InvalidDicomError) as exc:
                emit(
                    log,
                    "retrieve.unreadable",
                    40,
                    spool_key=key,
                    sop_instance_uid=sop_instance_uid,
                    reason=str(exc),
                )
                unread.append(sop_instance_uid)
                continue
            yield QueryRetrieveStatus.PENDING, dataset
        if unread:
            failed = Dataset()
            failed.FailedSOPInstanceUIDList = unread
            yield QueryRetrieveStatus.SUB_OPERATIONS_COMPLETE_WITH_FAILURES, failed

    def on_get(self, event: Event) -> Iterator[Any]:
        if self._refused(event, "C-GET"):
            # pynetdicom answers a count of 0 with Success: one (never started)
            # sub-operation lets the refusal be the final status
            yield 1
            yield QueryRetrieveStatus.NOT_AUTHORIZED, None
            return
        keys = self._instances(event)
        if keys is None:
            yield 0
            yield QueryRetrieveStatus.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS, None
            return
        emit(
            log, "get", instances=len(keys), calling_ae=str(event.assoc.requestor.ae_title).strip()
        )
        yield len(keys)
        yield from self._datasets(event, keys)

    def on_move(self, event: Event) -> Iterator[Any]:
        if self._refused(event, "C-MOVE"):
            yield None, None  # answered A801: pynetdicom's only refusal before sub-operations
            return
        target = str(event.move_destination or "").strip()
        destination = self.config.destination_for_ae(target)
        if destination is None:
            emit(
                log,
                "move.refused",
                30,
                move_destination=target,
                reason="not a configured destination",
            )
            yield None, None
            return
        keys = self._instances(event)
        if keys is None:
            yield None, None
            return
        contexts = _contexts(keys)
        options: dict[str, Any] = {"contexts": contexts}
        secure = tls_args(destination, self.config.path)
        if secure is not None:
            options["tls_args"] = secure
        emit(
            log,
            "move",
            instances=len(keys),
            destination=destination.name,
            calling_ae=str(event.assoc.requestor.ae_title).strip(),
        )
        yield destination.host, destination.port, options
        yield len(keys)
        yield from self._datasets(event, keys)


def _contexts(keys: Sequence[tuple[str, str, str, str]]) -> list[Any]:
    """One presentation context per SOP class: its stored syntaxes, then uncompressed."""
    by_class: dict[str, list[str]] = {}
    for _, sop_class, syntax, _ in keys:
        syntaxes = by_class.setdefault(sop_class, [])
        for ts in (syntax, *UNCOMPRESSED):
            if ts not in syntaxes:
                syntaxes.append(ts)
    return [build_context(sop_class, syntaxes) for sop_class, syntaxes in by_class.items()][:128]
