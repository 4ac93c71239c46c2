"""Start-up reconciliation: the spool is the truth about what was acknowledged.

An instance is fsynced into the spool before it is indexed, and the database may run
with relaxed fsync (SQLite WAL, synchronous=NORMAL); after a crash or power loss, a
spool file may therefore lack its row. Every such file is indexed again here, before
the node accepts associations, so nothing acknowledged is ever forgotten.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import pydicom
from pydicom.errors import InvalidDicomError

from dicom_node.dicom.truncation import incomplete
from dicom_node.obs.logs import emit, get_logger
from dicom_node.receive.scp import InvalidInstance, describe_instance
from storage.database import Database
from storage.instances import indexed_keys, record_instance, superseding_row
from storage.spool import Spool

log = get_logger("reconcile")


def reconcile_spool(db: Database, spool: Spool, clock: Callable[[], datetime]) -> int:
    """Indexes spooled instances that have no row; returns how many were recovered."""
    partials = spool.remove_partials()
    with db.session() as session:
        known = indexed_keys(session)
    recovered = 0
    for key in spool.instance_files():
        if key in known:
            continue
        path = spool.path(key)
        try:
            ds = pydicom.dcmread(path)
            problem = incomplete(ds, path)
            if problem is not None:
                raise ValueError(f"not whole, so never acknowledged: {problem}")
            rec = describe_instance(
                ds,
                sop_class_uid=str(ds.file_meta.get("MediaStorageSOPClassUID", ds.SOPClassUID)),
                sop_instance_uid=str(
                    ds.file_meta.get("MediaStorageSOPInstanceUID", ds.SOPInstanceUID)
                ),
                transfer_syntax_uid=str(ds.file_meta.TransferSyntaxUID),
                calling_ae=str(ds.file_meta.get("SourceApplicationEntityTitle", "") or ""),
                received_at=clock(),
                size_bytes=path.stat().st_size,
            )
        except (InvalidDicomError, InvalidInstance, OSError, ValueError, AttributeError) as exc:
            try:
                moved: str | None = spool.quarantine(key)
            except OSError:
                moved = None
            emit(log, "spool.unreadable", 40, spool_key=key, reason=str(exc), quarantined=moved)
            continue
        if rec.spool_key != key:
            emit(log, "spool.misplaced", 40, spool_key=key, expected=rec.spool_key)
            continue
        with db.session() as session:
            newer = superseding_row(session, rec)
            if newer is not None and newer[1].timestamp() >= path.stat().st_mtime:
                # the same instance was received again, in another series, after this
                # file was written: the last copy wins
                emit(log, "spool.superseded", spool_key=key, by=newer[0])
                continue
            record_instance(session, rec)
        recovered += 1
    emit(log, "spool.reconciled", recovered=recovered, partial_files_removed=partials)
    return recovered
