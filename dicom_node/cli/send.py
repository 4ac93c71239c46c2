"""`dicom-node send`: C-STORE any DICOM files, in the transfer syntax they are stored in.

Each compressed or otherwise unusual (SOP class, transfer syntax) pair among the files
is proposed as its own presentation context, beside one context per SOP class offering
Explicit and Implicit VR Little Endian (PS3.8 9.3.2.2: the acceptor answers each
context separately, PS3.7 B.1: it may accept or refuse each abstract/transfer syntax).
A file whose own syntax the peer accepted goes as it is; one whose syntax was refused
goes decoded to Explicit VR Little Endian when the peer accepted that for its SOP class;
otherwise the peer's refusal is reported with the SOP class and syntax it refused.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID, ExplicitVRLittleEndian
from pynetdicom.association import Association

from dicom_node.config import Destination
from dicom_node.dicom.status import is_stored
from dicom_node.net.ae import UNCOMPRESSED, AssociationError, associate
from dicom_node.net.patches import polling
from dicom_node.net.tls import TLSArgs

MAX_CONTEXTS = 128
"""Presentation context IDs are the odd numbers 1–255 (PS3.8 9.3.2.2)."""


class SendError(ValueError):
    """The files cannot be offered on one association; the message says why."""


@dataclass(frozen=True)
class FileToSend:
    """A file's path and the two UIDs that decide its presentation context."""

    path: Path
    sop_class: UID
    transfer_syntax: UID


@dataclass
class SendReport:
    """What one `send` achieved: instances stored, and one line per problem."""

    stored: int = 0
    problems: list[str] = field(default_factory=list)
    refused: Counter[tuple[UID, UID]] = field(default_factory=Counter)


def scan(paths: Iterable[Path]) -> tuple[list[FileToSend], list[str]]:
    """The DICOM files among ``paths`` (header only), and a line per file that is not."""
    files, problems = [], []
    for path in paths:
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            files.append(FileToSend(path, UID(ds.SOPClassUID), ds.file_meta.TransferSyntaxUID))
        except (InvalidDicomError, OSError, AttributeError, EOFError, ValueError) as exc:
            problems.append(f"{path}: not a DICOM file with a SOP class ({exc})")
    return files, problems


def contexts_for(files: Sequence[FileToSend]) -> list[tuple[str, list[str]]]:
    """One uncompressed context per SOP class, and one per other syntax the files use."""
    contexts: dict[tuple[str, tuple[str, ...]], None] = {}
    for f in files:
        contexts[(f.sop_class, UNCOMPRESSED)] = None
    for f in files:
        if f.transfer_syntax not in UNCOMPRESSED:
            contexts[(f.sop_class, (f.transfer_syntax,))] = None
    return [(sop_class, list(syntaxes)) for sop_class, syntaxes in contexts]


def send(
    destination: Destination,
    calling_ae: str,
    files: Sequence[FileToSend],
    tls: TLSArgs | None = None,
    timeout_s: float = 60.0,
    step: Callable[[], object] = lambda: None,
) -> SendReport:
    """C-STOREs ``files`` on one association and reports, per file, what the peer did;
    ``step`` is called once each file is done with (stored, refused or not sent), for a
    progress bar.

    Raises :class:`SendError` when the files need more presentation contexts than one
    association can carry, :class:`AssociationError` when no association is made or it is
    lost."""
    contexts = contexts_for(files)
    if len(contexts) > MAX_CONTEXTS:
        raise SendError(
            f"the files need {len(contexts)} presentation contexts (SOP class × transfer "
            f"syntax), one association carries at most {MAX_CONTEXTS}: send fewer at once"
        )
    report = SendReport()
    if not files:
        return report
    assoc = associate(destination, calling_ae, contexts, timeout_s, tls)
    try:
        accepted = {
            (UID(str(cx.abstract_syntax)), UID(ts))
            for cx in assoc.accepted_contexts
            for ts in cx.transfer_syntax
        }
        for f in files:
            _send_one(assoc, f, accepted, destination.name, report)
            step()
    finally:
        if assoc.is_established:
            assoc.release()
    for (sop_class, syntax), count in report.refused.items():
        report.problems.append(
            f"{destination.name}: refused {_named(sop_class)} in {_named(syntax)} "
            f"(and no uncompressed alternative): {count} file(s) not sent"
        )
    return report


def _named(uid: UID) -> str:
    return f"{uid.name} ({uid})" if uid.name != str(uid) else str(uid)


def _send_one(
    assoc: Association,
    f: FileToSend,
    accepted: set[tuple[UID, UID]],
    peer: str,
    report: SendReport,
) -> None:
    polling.note_activity()
    ds = pydicom.dcmread(f.path)
    if (f.sop_class, f.transfer_syntax) not in accepted:
        if not any((f.sop_class, ts) in accepted for ts in UNCOMPRESSED):
            report.refused[(f.sop_class, f.transfer_syntax)] += 1
            return
        if f.transfer_syntax.is_compressed:
            try:
                ds.decompress(generate_instance_uid=False)  # same image, same UID
            except Exception as exc:  # decoders raise many types; each means "cannot decode"
                report.problems.append(
                    f"{f.path}: {peer} does not take {_named(f.transfer_syntax)} and the "
                    f"pixel data cannot be decoded to send uncompressed ({exc})"
                )
                return
        elif f.transfer_syntax.is_deflated:
            ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian  # held inflated in memory
    response = assoc.send_c_store(ds)
    status = getattr(response, "Status", None)
    if status is None:
        raise AssociationError(f"{peer}: no response for {f.path} (association lost or timed out)")
    if is_stored(int(status)):
        report.stored += 1
    else:
        report.problems.append(f"{peer}: refused {f.path} with status 0x{int(status):04X}")
