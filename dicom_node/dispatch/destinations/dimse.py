"""DIMSE destinations: a series sent with C-STORE on one association (PS3.4 B).

An instance counts as delivered only when the destination answered it with a success
or warning status (PS3.4 B.2.3: warnings mean it stored the instance).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pydicom

from dicom_node.config import Config, Destination
from dicom_node.dicom.status import is_stored
from dicom_node.dispatch.destinations.base import DeliveryError
from dicom_node.net.ae import UNCOMPRESSED, associate
from dicom_node.net.patches import polling
from dicom_node.net.tls import TLSArgs, tls_args


def send_files(
    destination: Destination,
    calling_ae: str,
    paths: Sequence[Path],
    sop_class_uid: str,
    timeout_s: float = 60.0,
    tls: TLSArgs | None = None,
) -> int:
    """C-STOREs every file on one association; returns how many were stored, or raises
    naming the first instance the destination did not store."""
    assoc = associate(destination, calling_ae, [(sop_class_uid, UNCOMPRESSED)], timeout_s, tls)
    try:
        for count, path in enumerate(paths):
            polling.note_activity()
            ds = pydicom.dcmread(path)
            response = assoc.send_c_store(ds)
            status = getattr(response, "Status", None)
            if status is None:
                raise DeliveryError(
                    f"{destination.name}: no response for instance {count + 1} of "
                    f"{len(paths)} (association lost or timed out)"
                )
            if not is_stored(int(status)):
                raise DeliveryError(
                    f"{destination.name}: refused instance {count + 1} of {len(paths)} "
                    f"with status 0x{int(status):04X}"
                )
        return len(paths)
    finally:
        if assoc.is_established:
            assoc.release()


def send_series(
    destination: Destination, paths: Sequence[Path], sop_class_uid: str, config: Config
) -> int:
    """The DIMSE sender: the node's calling AE title, TLS where the destination has it."""
    return send_files(
        destination,
        config.calling_ae_title,
        paths,
        sop_class_uid,
        tls=tls_args(destination, config.path),
    )
