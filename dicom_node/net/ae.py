"""The node's Application Entity, built in one place for the SCP and every SCU.

Every AE the node makes carries its implementation identity (PS3.7 D.3.3.2), runs with
the polling patch, and proposes or accepts the transfer syntaxes listed here: the
listening AE accepts every syntax in :data:`ACCEPTED_TRANSFER_SYNTAXES`; what the node
sends goes in one of :data:`UNCOMPRESSED` unless the file is sent as stored.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from dataclasses import dataclass

from pynetdicom import AE, AllStoragePresentationContexts, register_uid
from pynetdicom import _config as pynetdicom_config
from pynetdicom.association import Association
from pynetdicom.service_class import StorageServiceClass
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from dicom_node.config import Destination, NodeSettings
from dicom_node.dicom.sop_classes import VENDOR_PRIVATE_STORAGE_SOP_CLASSES
from dicom_node.dicom.uids import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME
from dicom_node.net.patches import polling, socket_reads, store_responses
from dicom_node.net.tls import TLSArgs

VERIFICATION = str(Verification)

UNCOMPRESSED: tuple[str, ...] = (
    "1.2.840.10008.1.2.1",  # Explicit VR Little Endian
    "1.2.840.10008.1.2",  # Implicit VR Little Endian
)
"""What every DICOM AE must support (PS3.5 10.1), Explicit first: what the node sends."""

ACCEPTED_TRANSFER_SYNTAXES: tuple[str, ...] = (
    *UNCOMPRESSED,
    "1.2.840.10008.1.2.1.99",  # Deflated Explicit VR Little Endian
    "1.2.840.10008.1.2.2",  # Explicit VR Big Endian (retired, still sent by old modalities)
    "1.2.840.10008.1.2.5",  # RLE Lossless
    "1.2.840.10008.1.2.4.50",  # JPEG Baseline (Process 1)
    "1.2.840.10008.1.2.4.51",  # JPEG Extended (Process 2 & 4)
    "1.2.840.10008.1.2.4.57",  # JPEG Lossless (Process 14)
    "1.2.840.10008.1.2.4.70",  # JPEG Lossless SV1
    "1.2.840.10008.1.2.4.80",  # JPEG-LS Lossless
    "1.2.840.10008.1.2.4.81",  # JPEG-LS Near-Lossless
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 Lossless
    "1.2.840.10008.1.2.4.91",  # JPEG 2000
    "1.2.840.10008.1.2.4.201",  # HTJ2K Lossless
    "1.2.840.10008.1.2.4.202",  # HTJ2K Lossless RPCL
    "1.2.840.10008.1.2.4.203",  # HTJ2K
)
"""Every transfer syntax the listening AE accepts for storage (docs/conformance.md)."""


class AssociationError(RuntimeError):
    """No association was made with a peer, or it was lost; the message says why."""


@dataclass(frozen=True)
class Timeouts:
    """ARTIM/ACSE, DIMSE and network (idle socket) timeouts, in seconds (PS3.8 9.1.5)."""

    acse_s: float
    dimse_s: float
    network_s: float

    @classmethod
    def uniform(cls, seconds: float) -> Timeouts:
        return cls(seconds, seconds, seconds)


def make_ae(ae_title: str, timeouts: Timeouts) -> AE:
    """An AE with the node's implementation identity and timeouts, no contexts yet."""
    polling.install()
    ae = AE(ae_title=ae_title)
    ae.implementation_class_uid = IMPLEMENTATION_CLASS_UID
    ae.implementation_version_name = IMPLEMENTATION_VERSION_NAME
    ae.acse_timeout = timeouts.acse_s
    ae.dimse_timeout = timeouts.dimse_s
    ae.network_timeout = timeouts.network_s
    return ae


def _register_vendor_storage() -> None:
    """Teaches pynetdicom the vendors' private storage SOP classes, so that their C-STOREs
    reach the store handler (pynetdicom answers unknown classes itself, with a failure)."""
    for uid, keyword in VENDOR_PRIVATE_STORAGE_SOP_CLASSES.items():
        register_uid(uid, keyword, StorageServiceClass)  # idempotent


def listening_ae(node: NodeSettings, services: Sequence[str]) -> AE:
    """The SCP: Verification, the SOP classes of ``services`` (Query/Retrieve), and every
    storage SOP class in every accepted transfer syntax, with the receive path's patches.

    Storage contexts take the SCU role too: a C-GET's instances travel back on the
    requestor's association (PS3.4 C.4.3)."""
    _register_vendor_storage()
    socket_reads.install()
    store_responses.install()
    # pynetdicom's own per-message log handlers format every PDU and DIMSE message
    # (and copy every received data set to test it for emptiness) even though its
    # logger is held at WARNING (dicom_node.obs.logs): a fifth of the receive path's CPU.
    # The node logs its own events instead. Applies to associations made from now on.
    pynetdicom_config.LOG_HANDLER_LEVEL = "none"
    ae = make_ae(
        node.ae_title, Timeouts(node.acse_timeout_s, node.dimse_timeout_s, node.network_timeout_s)
    )
    ae.add_supported_context(VERIFICATION)
    for sop_class in services:
        ae.add_supported_context(sop_class)
    storage = [str(cx.abstract_syntax) for cx in AllStoragePresentationContexts]
    for sop_class in (*storage, *VENDOR_PRIVATE_STORAGE_SOP_CLASSES):
        ae.add_supported_context(
            sop_class, list(ACCEPTED_TRANSFER_SYNTAXES), scu_role=True, scp_role=True
        )
    ae.maximum_pdu_size = node.max_pdu_size
    ae.maximum_associations = node.maximum_associations
    return ae


def _reachable(destination: Destination, timeout_s: float) -> None:
    """Raises with the socket's own reason when nothing listens at the destination;
    pynetdicom reports a refused connection only as an aborted association."""
    try:
        socket.create_connection((destination.host, destination.port), timeout=timeout_s).close()
    except OSError as exc:
        raise AssociationError(
            f"{destination.name}: cannot connect to {destination.host}:{destination.port} "
            f"({exc.strerror or exc})"
        ) from exc


def associate(
    destination: Destination,
    calling_ae: str,
    contexts: Sequence[tuple[str, Sequence[str]]],
    timeout_s: float,
    tls: TLSArgs | None,
) -> Association:
    """An association (as SCU) with ``destination`` proposing each (SOP class, transfer
    syntaxes) presentation context; raises :class:`AssociationError` saying why when
    none is made."""
    _reachable(destination, timeout_s)
    ae = make_ae(calling_ae, Timeouts.uniform(timeout_s))
    for sop_class, syntaxes in contexts:
        ae.add_requested_context(sop_class, list(syntaxes))
    assoc = ae.associate(
        destination.host, destination.port, ae_title=destination.ae_title, tls_args=tls
    )
    if not assoc.is_established:
        if assoc.is_rejected:
            raise AssociationError(f"{destination.name}: association rejected")
        if assoc.is_aborted:
            raise AssociationError(f"{destination.name}: association aborted by the peer")
        secure = " (TLS handshake failed?)" if tls else ""
        raise AssociationError(f"{destination.name}: association not established{secure}")
    return assoc
