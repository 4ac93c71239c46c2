"""DICOM Digital Signatures on pydicom datasets, interoperable with DCMTK's ``dcmsign``.

Every synthetic object the node sends carries a signature over the attributes that say
what it is (identity UIDs, Synthetic Data, Image Type, derivation, contributing
equipment), the image content (pixel module and Pixel Data) and the node's private
provenance record, so that a PACS, a radiologist's workstation or a regulator can prove
that the marking was not stripped or altered after the node produced the image.

Standard references:

* PS3.15 Annex C (Base RSA Digital Signature Profile): RSA signature (PKCS #1 v1.5) of a
  MAC computed with a hash such as SHA-256 (DICOM CP 1059 added SHA-2).
* PS3.3 C.12.1 (SOP Common Module), C.12.1.1.3 (Digital Signatures): the MAC Parameters
  Sequence (4FFE,0001) and Digital Signatures Sequence (FFFA,FFFA), and in
  C.12.1.1.3.1.1 the byte stream the MAC is computed over.
* PS3.5 Section 7 (data element encoding) for the MAC Calculation Transfer Syntax,
  always Explicit VR Little Endian here.

The MAC byte stream (PS3.3 C.12.1.1.3.1.1, as implemented by DCMTK ``dcmsign``) is

1. every signed data element, in ascending tag order, encoded in Explicit VR Little
   Endian: tag, VR, (two reserved bytes and) length, and value with its padding;
2. except that a sequence is written as its tag, ``SQ`` and two reserved bytes with *no*
   length; each item as the item tag (FFFE,E000) with *no* length, followed by its
   signable elements in tag order and *no* item delimitation; and the sequence ends with
   the sequence delimitation tag (FFFE,E0DD) with *no* length. Lengths of sequences and
   items are left out because they may be either defined or undefined;
3. followed by the elements of the Digital Signatures item itself, except Certificate of
   Signer, Signature, Certified Timestamp Type and Certified Timestamp: MAC ID Number,
   Digital Signature UID, Digital Signature DateTime, Certificate Type and Digital
   Signature Purpose Code Sequence.

Never signable: group lengths (gggg,0000), Length to End, groups below 0008, group FFFA,
the MAC Parameters Sequence, Data Set Trailing Padding, delimiters, elements of VR UN and
sequences containing them. Because VR UN cannot be signed, a verifier that reads an
object in Implicit VR must know every signed attribute's VR; DCMTK 3.6.7 does not know
Synthetic Data (0008,001C) or the node's private provenance block, so install
:data:`dicom_node.evidence.provenance.DCMTK_DICTIONARY_SUPPLEMENT` (via ``DCMDICTPATH``) wherever
DCMTK may transcode or verify the node's objects.
"""

from __future__ import annotations

import copy
import datetime as dt
import struct
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from cryptography.hazmat.primitives.serialization import Encoding
from pydicom.charset import convert_encodings, default_encoding
from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import DataElement, RawDataElement, convert_raw_data_element
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import correct_ambiguous_vr_element, write_data_element
from pydicom.sequence import Sequence as DicomSequence
from pydicom.tag import BaseTag, Tag
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pydicom.valuerep import AMBIGUOUS_VR, DT, EXPLICIT_VR_LENGTH_32, VR

from dicom_node.evidence.keys import Signer
from dicom_node.evidence.provenance import PRIVATE_CREATOR as PROVENANCE_PRIVATE_CREATOR
from dicom_node.evidence.provenance import PRIVATE_GROUP as PROVENANCE_GROUP

__all__ = [
    "CERTIFICATE_TYPE",
    "DEFAULT_SIGNED_KEYWORDS",
    "MAC_ALGORITHM",
    "SignatureCheck",
    "Signer",
    "sign_dataset",
    "verify_dataset",
]

MAC_TRANSFER_SYNTAX = ExplicitVRLittleEndian
MAC_ALGORITHM = "SHA256"
CERTIFICATE_TYPE = "X509_1993_SIG"
# ASTM E1762 signature purpose 14, "Source Signature": signed by an automated data source
# (CID 7007, Digital Signature Purpose Code Sequence (0400,0401)).
_SOURCE_SIGNATURE_PURPOSE = ("14", "ASTM-sigpurpose", "Source Signature")

#: What proves the object's identity, that it is synthetic, and what it shows.
#: Patient and study demographics are deliberately not signed: a PACS may correct them
#: (patient merge, reconciliation) without touching what the node asserted.
DEFAULT_SIGNED_KEYWORDS: tuple[str, ...] = (
    "SpecificCharacterSet",  # how the signed text values are to be read
    "ImageType",
    "SOPClassUID",
    "SOPInstanceUID",
    "SyntheticData",
    "SeriesDescription",
    "DerivationDescription",
    "SourceImageSequence",
    "DerivationCodeSequence",
    "ContributingEquipmentSequence",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "FrameOfReferenceUID",
    "SamplesPerPixel",
    "PhotometricInterpretation",
    "NumberOfFrames",
    "Rows",
    "Columns",
    "PixelSpacing",
    "BitsAllocated",
    "BitsStored",
    "HighBit",
    "PixelRepresentation",
    "PlanarConfiguration",
    "RescaleIntercept",
    "RescaleSlope",
    "PixelData",
)

_PIXEL_DATA = BaseTag(0x7FE00010)
_UNDEFINED_LENGTH = 0xFFFFFFFF
_ITEM_TAG = b"\xfe\xff\x00\xe0"
_SEQUENCE_DELIMITATION_TAG = b"\xfe\xff\xdd\xe0"
# Digital Signatures item elements left out of the MAC: Certificate of Signer, Signature,
# Certified Timestamp Type and Certified Timestamp (the last two are added after signing).
_NOT_IN_SIGNATURE_ITEM_MAC = frozenset(
    BaseTag(tag) for tag in (0x04000115, 0x04000120, 0x04000305, 0x04000310)
)
_MAC_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "SHA256": hashes.SHA256,
    "SHA384": hashes.SHA384,
    "SHA512": hashes.SHA512,
}


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


class _UnsignableError(ValueError):
    """A data element that PS3.3 C.12.1.1.3.1.1 keeps out of any MAC."""


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


def sign_dataset(
    ds: Dataset,
    signer: Signer,
    keywords_or_tags: Sequence[str | int] | None = None,
    when: dt.datetime | None = None,
) -> str:
    """Sign *ds* in place and return the new Digital Signature UID (PS3.3 C.12.1.1.3).

    Signs those of *keywords_or_tags* (keywords or integer tags, private ones included;
    default :data:`DEFAULT_SIGNED_KEYWORDS` plus the node's provenance block) that are
    present; the private creator of any signed private element is signed with it. Adds a
    MAC Parameters item (SHA-256 MAC in Explicit VR Little Endian, Data Elements Signed)
    and a Digital Signatures item (RSA PKCS #1 v1.5, X509_1993_SIG certificate, purpose
    "Source Signature"). *when* (timezone-aware, default now) is recorded in UTC.

    To make the signed bytes the ones that will be written, signed elements are decoded
    and ambiguous VRs fixed in place, and native Pixel Data is pinned to VR OW (PS3.5
    A.1/A.2), which survives transcoding to Implicit VR.
    Raises ValueError when nothing to sign is present, a requested element cannot be
    signed (VR UN, encapsulated Pixel Data, forbidden tag) or the certificate is not
    valid at *when*.
    """
    tags = _tags_to_sign(ds, keywords_or_tags)
    signed_at = _signature_time(when, signer.certificate)
    mac_id = _unused_mac_id(ds)
    signature_item = _new_signature_item(signer, mac_id, signed_at)
    mac_hash = _MAC_HASHES[MAC_ALGORITHM]()
    digest = _mac_digest(ds, tags, signature_item, mac_hash, exact=False)
    signature_item.Signature = signer.private_key.sign(
        digest, padding.PKCS1v15(), Prehashed(mac_hash)
    )
    _append_item(ds, "MACParametersSequence", _mac_parameters_item(mac_id, tags))
    _append_item(ds, "DigitalSignaturesSequence", signature_item)
    return str(signature_item.DigitalSignatureUID)


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


def _tags_to_sign(ds: Dataset, keywords_or_tags: Sequence[str | int] | None) -> list[BaseTag]:
    """The requested tags present in *ds*, with their private creators, in ascending order."""
    if keywords_or_tags is None:
        requested = [_as_tag(keyword) for keyword in DEFAULT_SIGNED_KEYWORDS]
        requested += _provenance_block_tags(ds)
    else:
        requested = [_as_tag(item) for item in keywords_or_tags]
    for tag in requested:
        if not _is_signable_tag(tag):
            raise ValueError(f"{tag} may not be signed (PS3.3 C.12.1.1.3.1.1)")
    requested += [_private_creator_tag(tag) for tag in requested if _is_private_data_tag(tag)]
    present = sorted({tag for tag in requested if tag in ds})
    if not present:
        raise ValueError("none of the data elements to be signed is present in the data set")
    return present


def _as_tag(keyword_or_tag: str | int) -> BaseTag:
    """Resolve a DICOM keyword or integer tag to a tag."""
    if isinstance(keyword_or_tag, str):
        tag = tag_for_keyword(keyword_or_tag)
        if tag is None:
            raise ValueError(f"unknown DICOM keyword {keyword_or_tag!r}")
        return BaseTag(tag)
    return Tag(keyword_or_tag)


def _provenance_block_tags(ds: Dataset) -> list[BaseTag]:
    """Private creator and data element tags of every provenance block in *ds*."""
    tags: list[BaseTag] = []
    for block in range(0x10, 0x100):
        creator_tag = BaseTag((PROVENANCE_GROUP << 16) | block)
        if creator_tag in ds and ds[creator_tag].value == PROVENANCE_PRIVATE_CREATOR:
            tags.append(creator_tag)
            tags += [
                tag
                for tag in sorted(ds.keys())
                if tag.group == PROVENANCE_GROUP and tag.element >> 8 == block
            ]
    return tags


def _is_private_data_tag(tag: BaseTag) -> bool:
    return tag.is_private and tag.element >= 0x1000


def _private_creator_tag(tag: BaseTag) -> BaseTag:
    return BaseTag((tag.group << 16) | (tag.element >> 8))


def _is_signable_tag(tag: BaseTag) -> bool:
    """Whether PS3.3 C.12.1.1.3.1.1 allows *tag* in a MAC at all (whatever its VR)."""
    return not (
        tag.element == 0x0000
        or tag.group < 0x0008
        or tag == 0x00080001  # Length to End
        or tag.group in (0xFFFA, 0xFFFE)  # Digital Signatures Sequence, delimiters
        or tag == 0x4FFE0001  # MAC Parameters Sequence
        or tag == 0xFFFCFFFC  # Data Set Trailing Padding
    )


def _signature_time(when: dt.datetime | None, certificate: x509.Certificate) -> dt.datetime:
    """The signing time in UTC, checked against the certificate's validity period."""
    if when is None:
        when = dt.datetime.now(dt.UTC)
    elif when.tzinfo is None:
        raise ValueError("the signing time must be timezone-aware")
    when = when.astimezone(dt.UTC)
    if not certificate.not_valid_before_utc <= when <= certificate.not_valid_after_utc:
        raise ValueError(
            f"certificate {certificate.subject.rfc4514_string()} is not valid at {when}: "
            f"valid {certificate.not_valid_before_utc} to {certificate.not_valid_after_utc}"
        )
    return when


def _unused_mac_id(ds: Dataset) -> int:
    """The lowest MAC ID Number (0400,0005) not used by an existing signature."""
    used = {
        int(item.MACIDNumber)
        for keyword in ("MACParametersSequence", "DigitalSignaturesSequence")
        for item in ds.get(keyword, [])
        if "MACIDNumber" in item
    }
    free = (mac_id for mac_id in range(0x10000) if mac_id not in used)
    mac_id = next(free, None)
    if mac_id is None:
        raise ValueError("all 65536 MAC ID Numbers are in use")
    return mac_id


def _new_signature_item(signer: Signer, mac_id: int, signed_at: dt.datetime) -> Dataset:
    """A Digital Signatures item without its Signature (PS3.3 Table C.12-6)."""
    item = Dataset()
    item.MACIDNumber = mac_id
    item.DigitalSignatureUID = generate_uid()
    item.DigitalSignatureDateTime = signed_at.strftime("%Y%m%d%H%M%S.%f+0000")
    item.CertificateType = CERTIFICATE_TYPE
    item.CertificateOfSigner = signer.certificate.public_bytes(Encoding.DER)
    purpose = Dataset()
    purpose.CodeValue, purpose.CodingSchemeDesignator, purpose.CodeMeaning = (
        _SOURCE_SIGNATURE_PURPOSE
    )
    item.DigitalSignaturePurposeCodeSequence = [purpose]
    return item


def _mac_parameters_item(mac_id: int, tags: Sequence[BaseTag]) -> Dataset:
    """A MAC Parameters item (PS3.3 Table C.12-1) describing how the MAC was made."""
    item = Dataset()
    item.MACIDNumber = mac_id
    item.MACCalculationTransferSyntaxUID = MAC_TRANSFER_SYNTAX
    item.MACAlgorithm = MAC_ALGORITHM
    item.DataElementsSigned = list(tags)
    return item


def _append_item(ds: Dataset, keyword: str, item: Dataset) -> None:
    """Append *item* to the sequence *keyword* of *ds*, creating the sequence if needed."""
    if keyword in ds:
        ds[keyword].value.append(item)
    else:
        setattr(ds, keyword, DicomSequence([item]))


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
        digest = _mac_digest(ds, record.tags, item, record.mac_hash, exact=True)
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
    if algorithm not in _MAC_HASHES:
        raise _MalformedSignatureError(f"unsupported or weak MAC Algorithm {algorithm!r}")
    tags = tuple(BaseTag(tag) for tag in _as_list(mac_item.DataElementsSigned))
    if not tags:
        raise _MalformedSignatureError("Data Elements Signed (0400,0020) is empty")
    forbidden = [str(tag) for tag in tags if not _is_signable_tag(tag)]
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
        mac_hash=_MAC_HASHES[algorithm](),
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


def _mac_digest(
    ds: Dataset,
    tags: Iterable[BaseTag],
    signature_item: Dataset,
    mac_hash: hashes.HashAlgorithm,
    *,
    exact: bool,
) -> bytes:
    """Hash the MAC byte stream of PS3.3 C.12.1.1.3.1.1 for *tags* and *signature_item*.

    With *exact* (verification) stored element bytes are hashed as found; otherwise
    (signing) elements are decoded in place and encoded as pydicom will write them.
    """
    hasher = hashes.Hash(mac_hash)
    encodings = _encodings(ds, [default_encoding])
    for tag in sorted(tags):
        for chunk in _element_chunks(ds, tag, encodings, [ds], exact):
            hasher.update(chunk)
    for tag in sorted(signature_item.keys()):
        if _is_signable_tag(tag) and tag not in _NOT_IN_SIGNATURE_ITEM_MAC:
            for chunk in _element_chunks(signature_item, tag, encodings, [signature_item], exact):
                hasher.update(chunk)
    return hasher.finalize()


def _element_chunks(
    parent: Dataset, tag: BaseTag, encodings: list[str], ancestors: list[Dataset], exact: bool
) -> Iterator[bytes]:
    """The MAC byte stream of one data element (sequences recursively)."""
    elem, stored = _resolve(parent, tag, encodings, ancestors, exact)
    if elem.VR == VR.SQ:
        yield _tag_bytes(tag) + b"SQ\x00\x00"
        for item in elem.value:
            yield _ITEM_TAG
            yield from _item_chunks(item, encodings, [item, *ancestors], exact)
        yield _SEQUENCE_DELIMITATION_TAG
    else:
        yield _leaf_bytes(elem, stored, encodings)


def _item_chunks(
    item: Dataset, parent_encodings: list[str], ancestors: list[Dataset], exact: bool
) -> Iterator[bytes]:
    """The signable elements of a sequence item, in tag order, without lengths."""
    encodings = _encodings(item, parent_encodings)
    for tag in sorted(item.keys()):
        if _is_signable_tag(tag):
            yield from _element_chunks(item, tag, encodings, ancestors, exact)


def _resolve(
    parent: Dataset, tag: BaseTag, encodings: list[str], ancestors: list[Dataset], exact: bool
) -> tuple[DataElement, bytes | None]:
    """The element with its VR resolved, and its stored value bytes when *exact* allows."""
    if not exact:
        elem = parent[tag]
        if elem.VR in AMBIGUOUS_VR:
            correct_ambiguous_vr_element(elem, parent, True, ancestors)
        _pin_native_pixel_data_vr(elem, len(ancestors) == 1)
        _check_signable(elem, parent)
        return elem, None
    stored = parent.get_item(tag)
    stored_bytes = None
    if isinstance(stored, RawDataElement):
        elem = convert_raw_data_element(stored, encoding=encodings, ds=parent)
        if stored.is_little_endian and stored.length != _UNDEFINED_LENGTH:
            stored_bytes = stored.value
    else:
        elem = stored
    if elem.VR in AMBIGUOUS_VR:
        elem = copy.copy(elem)
        correct_ambiguous_vr_element(elem, parent, True, ancestors)
    _check_signable(elem, parent)
    return elem, stored_bytes


def _pin_native_pixel_data_vr(elem: DataElement, top_level: bool) -> None:
    """Give native Pixel Data VR OW, the only VR it can have in Implicit VR (PS3.5 A.1)."""
    if (
        top_level
        and elem.tag == _PIXEL_DATA
        and elem.VR == VR.OB
        and not elem.is_undefined_length
        and isinstance(elem.value, bytes)
        and len(elem.value) % 2 == 0
    ):
        elem.VR = VR.OW


def _check_signable(elem: DataElement, parent: Dataset) -> None:
    """Raise _UnsignableError for values PS3.3 C.12.1.1.3.1.1 keeps out of a MAC."""
    if elem.VR == VR.UN or elem.VR in AMBIGUOUS_VR:
        raise _UnsignableError(
            f"{elem.tag} has VR {elem.VR} (unknown VR, e.g. lost in Implicit VR): not signable"
        )
    if elem.tag == _PIXEL_DATA and (elem.is_undefined_length or _is_encapsulated(parent)):
        raise _UnsignableError(
            "encapsulated (compressed) Pixel Data cannot be signed in the Explicit VR "
            "Little Endian MAC transfer syntax; decompress it first"
        )


def _is_encapsulated(ds: Dataset) -> bool:
    meta = getattr(ds, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    return bool(syntax is not None and syntax.is_encapsulated)


def _leaf_bytes(elem: DataElement, stored: bytes | None, encodings: list[str]) -> bytes:
    """Tag, VR, (reserved bytes and) length and value in Explicit VR Little Endian."""
    value = stored if stored is not None else _encoded_value(elem, encodings)
    if elem.VR in EXPLICIT_VR_LENGTH_32:
        length = b"\x00\x00" + struct.pack("<I", len(value))
    elif len(value) <= 0xFFFF:
        length = struct.pack("<H", len(value))
    else:
        raise _UnsignableError(f"{elem.tag} ({elem.VR}) is too long for Explicit VR encoding")
    return _tag_bytes(elem.tag) + elem.VR.encode("ascii") + length + value


def _encoded_value(elem: DataElement, encodings: list[str]) -> bytes:
    """The value field (with padding) exactly as pydicom writes it in Little Endian."""
    buffer = DicomBytesIO()
    buffer.is_little_endian = True
    buffer.is_implicit_VR = True  # fixed 8-byte header: tag and 32-bit length
    write_data_element(buffer, elem, encodings)
    return buffer.getvalue()[8:]


def _tag_bytes(tag: BaseTag) -> bytes:
    return struct.pack("<HH", tag.group, tag.element)


def _encodings(ds: Dataset, inherited: list[str]) -> list[str]:
    """The character sets of *ds*: its own Specific Character Set, else the inherited one."""
    stored = ds.get_item(0x00080005)
    if stored is None:
        return inherited
    elem = convert_raw_data_element(stored) if isinstance(stored, RawDataElement) else stored
    return convert_encodings(elem.value) if elem.value else inherited
