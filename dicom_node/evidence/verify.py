"""`dicom-node verify`: is this file synthetic, and does its evidence hold together?

Each kind of evidence is read independently — the standard Synthetic Data tag, the
Contributing Equipment code, the provenance record, the digital signature, the invisible
watermark — so that a file stripped of some of it (anonymised, re-encoded, tags removed)
is still recognised by the rest, and a file whose pieces disagree is reported tampered.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import pydicom
from cryptography import x509
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from dicom_node.dicom.codes import SYNTHESIZING_EQUIPMENT
from dicom_node.evidence.provenance import read_private_block
from dicom_node.evidence.verifying import verify_dataset
from dicom_node.evidence.watermark import detect


class UnreadableFile(ValueError):
    """The file is not DICOM, or its pixels cannot be decoded; the message names it."""


@dataclass(frozen=True)
class Verdict:
    """What one file says about itself, and whether it says it consistently."""

    path: str
    synthetic: bool
    signature: Literal["valid", "invalid", "absent"]
    watermark: bool
    tampered: bool
    synthetic_data_tag: bool
    synthesizing_equipment: bool
    provenance: dict[str, Any] | None
    provenance_identifier: str | None
    watermark_identifier: str | None
    watermark_matches_provenance: bool | None
    signature_reason: str
    signer: str | None
    certificate_trusted: bool | None
    reasons: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _synthesizing_equipment(ds: Dataset) -> bool:
    for item in ds.get("ContributingEquipmentSequence", []):
        for code in item.get("PurposeOfReferenceCodeSequence", []):
            pair = (str(code.get("CodeValue", "")), str(code.get("CodingSchemeDesignator", "")))
            if pair == SYNTHESIZING_EQUIPMENT:
                return True
    return False


def _pixels(ds: Dataset, path: Path) -> Any:
    if "PixelData" not in ds:
        return None
    try:
        array = ds.pixel_array
    except Exception as exc:  # decoders raise many types; each means "cannot decode"
        raise UnreadableFile(f"{path}: cannot decode pixel data ({exc})") from exc
    return array if array.ndim == 2 else array.reshape(-1, *array.shape[-2:])


def _watermark(pixels: Any) -> bytes | None:
    """The identifier found in the image (any frame), or None."""
    if pixels is None:
        return None
    frames = [pixels] if pixels.ndim == 2 else list(pixels)
    for frame in frames:
        found = detect(frame)
        if found.found:
            return found.identifier
    return None


def verify_file(path: Path, trusted: Sequence[x509.Certificate] = ()) -> Verdict:
    """The evidence in one file; raises UnreadableFile when it cannot be read as DICOM."""
    try:
        ds = pydicom.dcmread(path)
    except (InvalidDicomError, OSError, EOFError, ValueError, KeyError, TypeError) as exc:
        raise UnreadableFile(f"{path}: not readable as DICOM ({exc})") from exc
    tag = str(ds.get("SyntheticData", "")).upper() == "YES"
    equipment = _synthesizing_equipment(ds)
    record = read_private_block(ds)
    record_id = record.identifier if record else None
    check = verify_dataset(ds, trusted_certificates=list(trusted) or None)
    mark = _watermark(_pixels(ds, path))
    matches = None if mark is None or record_id is None else mark == record_id

    reasons = []
    if check.status == "invalid":
        reasons.append(f"signature invalid: {check.reason}")
    if matches is False:
        reasons.append("watermark names a different provenance record than the file carries")
    if mark is not None and not tag:
        reasons.append("watermark says synthetic but Synthetic Data (0008,001C) is not YES")
    return Verdict(
        path=str(path),
        synthetic=tag or equipment or record is not None or mark is not None,
        signature=check.status,
        watermark=mark is not None,
        tampered=bool(reasons),
        synthetic_data_tag=tag,
        synthesizing_equipment=equipment,
        provenance=record.to_dict() if record else None,
        provenance_identifier=record_id.hex() if record_id else None,
        watermark_identifier=mark.hex() if mark else None,
        watermark_matches_provenance=matches,
        signature_reason=check.reason,
        signer=check.signer,
        certificate_trusted=check.certificate_trusted,
        reasons=reasons,
    )


def dicom_files(paths: Sequence[Path]) -> Iterator[Path]:
    """The files named, and every file under the folders named, in a stable order."""
    for path in paths:
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.is_file())
        else:
            yield path


def load_certificates(paths: Sequence[Path]) -> list[x509.Certificate]:
    """PEM certificates to trust; a missing or bad file is an error naming it."""
    out = []
    for path in paths:
        try:
            out.append(x509.load_pem_x509_certificate(path.read_bytes()))
        except (OSError, ValueError) as exc:
            raise ValueError(f"{path}: not a PEM certificate ({exc})") from exc
    return out
