"""Signing: a DICOM Digital Signature (PS3.3 C.12.1.1.3) added to a pydicom data set.

Every synthetic object the node sends is signed with the node's key over the elements
:mod:`dicom_node.evidence.signed_tags` selects, so that a PACS, a radiologist's
workstation or a regulator can prove the marking was not stripped or altered after the
node produced the image; DCMTK's ``dcmsign --verify`` accepts the result.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from cryptography.hazmat.primitives.serialization import Encoding
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.tag import BaseTag
from pydicom.uid import generate_uid

from dicom_node.evidence.keys import Signer
from dicom_node.evidence.mac import CERTIFICATE_TYPE, MAC_HASHES, MAC_TRANSFER_SYNTAX, mac_digest
from dicom_node.evidence.signed_tags import tags_to_sign

MAC_ALGORITHM = "SHA256"
"""The MAC Algorithm (0400,0015) the node signs with."""
# ASTM E1762 signature purpose 14, "Source Signature": signed by an automated data source
# (CID 7007, Digital Signature Purpose Code Sequence (0400,0401)).
_SOURCE_SIGNATURE_PURPOSE = ("14", "ASTM-sigpurpose", "Source Signature")


def sign_dataset(
    ds: Dataset,
    signer: Signer,
    keywords_or_tags: Sequence[str | int] | None = None,
    when: dt.datetime | None = None,
) -> str:
    """Sign *ds* in place and return the new Digital Signature UID (PS3.3 C.12.1.1.3).

    Signs those of *keywords_or_tags* (keywords or integer tags, private ones included;
    default :data:`dicom_node.evidence.signed_tags.DEFAULT_SIGNED_KEYWORDS` plus the
    node's provenance block) that are present; the private creator of any signed private
    element is signed with it. Adds a MAC Parameters item (SHA-256 MAC in Explicit VR
    Little Endian, Data Elements Signed) and a Digital Signatures item (RSA PKCS #1 v1.5,
    X509_1993_SIG certificate, purpose "Source Signature"). *when* (timezone-aware,
    default now) is recorded in UTC.

    To make the signed bytes the ones that will be written, signed elements are decoded
    and ambiguous VRs fixed in place, and native Pixel Data is pinned to VR OW (PS3.5
    A.1/A.2), which survives transcoding to Implicit VR.
    Raises ValueError when nothing to sign is present, a requested element cannot be
    signed (VR UN, encapsulated Pixel Data, forbidden tag) or the certificate is not
    valid at *when*.
    """
    tags = tags_to_sign(ds, keywords_or_tags)
    signed_at = _signature_time(when, signer.certificate)
    mac_id = _unused_mac_id(ds)
    signature_item = _new_signature_item(signer, mac_id, signed_at)
    mac_hash = MAC_HASHES[MAC_ALGORITHM]()
    digest = mac_digest(ds, tags, signature_item, mac_hash, exact=False)
    signature_item.Signature = signer.private_key.sign(
        digest, padding.PKCS1v15(), Prehashed(mac_hash)
    )
    _append_item(ds, "MACParametersSequence", _mac_parameters_item(mac_id, tags))
    _append_item(ds, "DigitalSignaturesSequence", signature_item)
    return str(signature_item.DigitalSignatureUID)


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
