"""Verifying: every DICOM Digital Signature of a data set checked against its stored bytes,
its RSA signature and its certificate (PS3.3 C.12.1.1.3, PS3.15 Annex C), the way DCMTK's
``dcmsign --verify`` checks them.
"""

from __future__ import annotations

import copy
import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from pydicom.dataset import Dataset
from pydicom.tag import BaseTag
from pydicom.valuerep import DT

from dicom_node.evidence.mac import CERTIFICATE_TYPE, MAC_HASHES, MAC_TRANSFER_SYNTAX, mac_digest
from dicom_node.evidence.signed_tags import is_signable_tag


@dataclass(frozen=True)
class SignatureCheck:
    """Outcome of :func:`verify_dataset`.

    ``status`` is "absent" without a Digital Signatures Sequence, "invalid" when a MAC or
    RSA check fails or the signature attributes are malformed, else "valid".
    ``certificate_trusted`` is None unless trusted certificates were given.
    """

    status: Literal["valid", "invalid", "absent"]
    signer: str | None
    signed_tags: tuple[int, ...]
    reason: str
    signature_uid: str | None = None
    certificate_trusted: bool | None = None


class _MalformedSignatureError(ValueError):
    """Signature attributes that cannot be interpreted."""


@dataclass(frozen=True)
class _SignatureRecord:
    """The parts of one Digital Signatures item and its MAC Parameters item."""

    uid: str
    certificate: x509.Certificate
    public_key: rsa.RSAPublicKey
    mac_hash: hashes.HashAlgorithm
    tags: tuple[BaseTag, ...]
    signature: bytes
    signed_at: dt.datetime


def verify_dataset(
    ds: Dataset, trusted_certificates: Sequence[x509.Certificate] | None = None
) -> SignatureCheck:
    """Verify every signature of *ds*'s main data set, leaving its signed elements as stored.

    Recomputes each MAC from the stored bytes of the signed elements and checks it against
    the RSA signature and the embedded certificate, which must have been valid at the
    Digital Signature DateTime. Returns the first invalid signature's check, else that of
    the most recent signature with a trusted certificate, else the most recent one. With
    *trusted_certificates*, also reports whether the signer's certificate is one of them or
    directly issued by one (no CRL or deeper chain checks): a valid signature only proves
    integrity since signing, the trusted certificate proves who signed.
    """
    signature_items = ds.get("DigitalSignaturesSequence")
    if not signature_items:
        return SignatureCheck("absent", None, (), "no Digital Signatures Sequence (FFFA,FFFA)")
    checks = [_verify_item(ds, item, trusted_certificates) for item in signature_items]
    invalid = [check for check in checks if check.status == "invalid"]
    if invalid:
        return invalid[0]
    chosen = next((check for check in reversed(checks) if check.certificate_trusted), checks[-1])
    if len(checks) == 1:
        return chosen
    return SignatureCheck(
        "valid",
        chosen.signer,
        chosen.signed_tags,
        f"{chosen.reason}; all {len(checks)} signatures valid",
        chosen.signature_uid,
        chosen.certificate_trusted,
    )


def _verify_item(
    ds: Dataset, item: Dataset, trusted: Sequence[x509.Certificate] | None
) -> SignatureCheck:
    """Check one Digital Signatures item against *ds*."""
    try:
        # a copy, so that reading the parameters leaves the item's stored bytes to the MAC
        record = _read_signature(ds, copy.deepcopy(item))
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        uid = str(item.get("DigitalSignatureUID", "")) or None
        return SignatureCheck("invalid", None, (), f"malformed signature: {exc}", uid)
    signer = record.certificate.subject.rfc4514_string()
    signed = tuple(int(tag) for tag in record.tags)

    def invalid(reason: str) -> SignatureCheck:
        return SignatureCheck("invalid", signer, signed, reason, record.uid)

    missing = [str(tag) for tag in record.tags if tag not in ds]
    if missing:
        return invalid(f"signed element(s) {', '.join(missing)} missing: removed after signing")
    try:
        digest = mac_digest(ds, record.tags, item, record.mac_hash, exact=True)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        return invalid(f"cannot recompute MAC: {exc}")
    problem = _rsa_problem(record, digest) or _validity_problem(record)
    if problem:
        return invalid(problem)
    trusted_flag, trust_note = _trust(record.certificate, trusted)
    reason = f"MAC and RSA signature match; signed by {signer} at {record.signed_at}{trust_note}"
    return SignatureCheck("valid", signer, signed, reason, record.uid, trusted_flag)


def _read_signature(ds: Dataset, item: Dataset) -> _SignatureRecord:
    """Collect a signature's parameters, raising _MalformedSignatureError when unusable."""
    mac_item = _mac_parameters_for(ds, int(item.MACIDNumber))
    syntax = str(mac_item.MACCalculationTransferSyntaxUID)
    if syntax != MAC_TRANSFER_SYNTAX:
        raise _MalformedSignatureError(f"unsupported MAC Calculation Transfer Syntax {syntax}")
    algorithm = str(mac_item.MACAlgorithm)
    if algorithm not in MAC_HASHES:
        raise _MalformedSignatureError(f"unsupported or weak MAC Algorithm {algorithm!r}")
    tags = tuple(BaseTag(tag) for tag in _as_list(mac_item.DataElementsSigned))
    if not tags:
        raise _MalformedSignatureError("Data Elements Signed (0400,0020) is empty")
    forbidden = [str(tag) for tag in tags if not is_signable_tag(tag)]
    if forbidden:
        raise _MalformedSignatureError(f"Data Elements Signed lists unsignable {forbidden}")
    if str(item.CertificateType) != CERTIFICATE_TYPE:
        raise _MalformedSignatureError(f"unsupported Certificate Type {item.CertificateType!r}")
    certificate = _der_certificate(bytes(item.CertificateOfSigner))
    public_key = certificate.public_key()
    if not isinstance(public_key, rsa.RSAPublicKey):
        raise _MalformedSignatureError("the signer's certificate does not hold an RSA key")
    return _SignatureRecord(
        uid=str(item.DigitalSignatureUID),
        certificate=certificate,
        public_key=public_key,
        mac_hash=MAC_HASHES[algorithm](),
        tags=tags,
        signature=bytes(item.Signature),
        signed_at=_as_utc(DT(item.DigitalSignatureDateTime)),
    )


def _mac_parameters_for(ds: Dataset, mac_id: int) -> Dataset:
    """The MAC Parameters item whose MAC ID Number is *mac_id*."""
    mac_items: list[Dataset] = list(ds.get("MACParametersSequence", []))
    for mac_item in mac_items:
        if int(mac_item.get("MACIDNumber", -1)) == mac_id:
            return mac_item
    raise _MalformedSignatureError(f"no MAC Parameters item with MAC ID Number {mac_id}")


def _as_list(value: object) -> list[int]:
    """A multi-valued AT value as a list, whatever its multiplicity."""
    if isinstance(value, int):
        return [value]
    if isinstance(value, Iterable):
        return [int(tag) for tag in value]
    raise _MalformedSignatureError("Data Elements Signed (0400,0020) has no tags")


def _der_certificate(data: bytes) -> x509.Certificate:
    """Parse Certificate of Signer, which may carry one byte of OB padding."""
    try:
        return x509.load_der_x509_certificate(data)
    except ValueError:
        if not data.endswith(b"\x00"):
            raise
        return x509.load_der_x509_certificate(data[:-1])


def _as_utc(value: dt.datetime) -> dt.datetime:
    """A DT value in UTC; without an offset it is taken as UTC, as DCMTK does."""
    if value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC)


def _rsa_problem(record: _SignatureRecord, digest: bytes) -> str | None:
    """None when the signature verifies against *digest*, else why it does not."""
    scheme = padding.PKCS1v15()
    try:
        record.public_key.verify(record.signature, digest, scheme, Prehashed(record.mac_hash))
        return None
    except InvalidSignature:
        pass
    try:
        record.public_key.recover_data_from_signature(record.signature, scheme, record.mac_hash)
    except (InvalidSignature, ValueError):
        return (
            "RSA check failed: Signature (0400,0120) is corrupted or was not made with "
            "the key of the embedded certificate"
        )
    return "MAC mismatch: data changed after signing"


def _validity_problem(record: _SignatureRecord) -> str | None:
    """Why the certificate was not valid at the signing time, or None (as dcmsign checks)."""
    certificate = record.certificate
    if record.signed_at < certificate.not_valid_before_utc:
        return f"certificate was not yet valid at signing time {record.signed_at}"
    if record.signed_at > certificate.not_valid_after_utc:
        return f"certificate had expired at signing time {record.signed_at}"
    return None


def _trust(
    certificate: x509.Certificate, trusted: Sequence[x509.Certificate] | None
) -> tuple[bool | None, str]:
    """Whether *certificate* is, or is directly issued by, one of *trusted*."""
    if trusted is None:
        return None, ""
    for anchor in trusted:
        if certificate == anchor:
            return True, "; certificate trusted (is a trusted certificate)"
        if certificate.issuer == anchor.subject and _issued_by(certificate, anchor):
            return True, f"; certificate trusted (issued by {anchor.subject.rfc4514_string()})"
    return False, "; certificate NOT trusted (not among or issued by the trusted certificates)"


def _issued_by(certificate: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        certificate.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True
