"""The MAC of a DICOM Digital Signature: the byte stream it is computed over, and the
constants of the profile the node signs and verifies with, interoperable with DCMTK's
``dcmsign``.

* PS3.15 Annex C (Base RSA Digital Signature Profile): RSA signature (PKCS #1 v1.5) of a
  MAC computed with a hash such as SHA-256 (DICOM CP 1059 added SHA-2).
* PS3.3 C.12.1.1.3.1.1: the byte stream the MAC is computed over.
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
"""

from __future__ import annotations

import copy
import struct
from collections.abc import Iterable, Iterator

from cryptography.hazmat.primitives import hashes
from pydicom.charset import convert_encodings, default_encoding
from pydicom.dataelem import DataElement, RawDataElement, convert_raw_data_element
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import correct_ambiguous_vr_element, write_data_element
from pydicom.tag import BaseTag
from pydicom.uid import ExplicitVRLittleEndian
from pydicom.valuerep import AMBIGUOUS_VR, EXPLICIT_VR_LENGTH_32, VR

from dicom_node.evidence.signed_tags import is_signable_tag

MAC_TRANSFER_SYNTAX = ExplicitVRLittleEndian
"""The only MAC Calculation Transfer Syntax the node writes and reads."""
CERTIFICATE_TYPE = "X509_1993_SIG"
"""The only Certificate Type (0400,0110) the node writes and reads: an X.509 certificate."""
MAC_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "SHA256": hashes.SHA256,
    "SHA384": hashes.SHA384,
    "SHA512": hashes.SHA512,
}
"""MAC Algorithms (0400,0015) the node verifies; weaker ones (MD5, SHA1) are refused."""

_PIXEL_DATA = BaseTag(0x7FE00010)
_UNDEFINED_LENGTH = 0xFFFFFFFF
_ITEM_TAG = b"\xfe\xff\x00\xe0"
_SEQUENCE_DELIMITATION_TAG = b"\xfe\xff\xdd\xe0"
# Digital Signatures item elements left out of the MAC: Certificate of Signer, Signature,
# Certified Timestamp Type and Certified Timestamp (the last two are added after signing).
_NOT_IN_SIGNATURE_ITEM_MAC = frozenset(
    BaseTag(tag) for tag in (0x04000115, 0x04000120, 0x04000305, 0x04000310)
)


class _UnsignableError(ValueError):
    """A data element that PS3.3 C.12.1.1.3.1.1 keeps out of any MAC."""


def mac_digest(
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
        if is_signable_tag(tag) and tag not in _NOT_IN_SIGNATURE_ITEM_MAC:
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
        if is_signable_tag(tag):
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
