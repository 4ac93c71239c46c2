"""DICOM Digital Signatures made by dicom_node.evidence.signing, checked by real DCMTK and
dicom3tools.

Each check is made twice: by DCMTK's independent ``dcmsign --verify`` (PS3.15 Annex C /
PS3.3 C.12.1.1.3 as DCMTK implements them) and by :func:`verify_dataset`, so the MAC byte
stream is proven interoperable, not just self-consistent.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from cryptography import x509
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
    MRImageStorage,
    generate_uid,
)
from synthesis import synthetic_series

from dicom_node.evidence.keys import Signer, create_self_signed
from dicom_node.evidence.provenance import DCMTK_DICTIONARY_SUPPLEMENT, block_tags
from dicom_node.evidence.provenance import PRIVATE_CREATOR as PROVENANCE_PRIVATE_CREATOR
from dicom_node.evidence.signing import sign_dataset
from dicom_node.evidence.verifying import SignatureCheck, verify_dataset
from dicom_node.synthesize.label import Marking
from factories import StudySpec, axial_series, ramp_pixels, write_series

PROVENANCE_CREATOR_TAG = 0x00710010
PROVENANCE_RECORD_TAG = 0x00711001
DCMTK_DICTIONARIES = ("/usr/share/libdcmtk17/dicom.dic", "/usr/share/libdcmtk17/private.dic")
# dciodvfy (dicom3tools 2022) predates Synthetic Data (0008,001C), its only expected error.
SYNTHETIC_DATA_UNKNOWN = "not a recognized standard attribute - (0x0008,0x001c)"


@pytest.fixture(scope="module")
def key_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("keys")
    key_path, cert_path = folder / "node.key", folder / "node.crt"
    create_self_signed(key_path, cert_path, "dicom-node signing test", key_bits=2048)
    return key_path, cert_path


@pytest.fixture(scope="module")
def signer(key_files: tuple[Path, Path]) -> Signer:
    return Signer.from_files(*key_files)


@pytest.fixture(scope="module")
def cert_path(key_files: tuple[Path, Path]) -> Path:
    return key_files[1]


@pytest.fixture(scope="module")
def dcmtk_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Environment giving DCMTK the dictionary entries it lacks (SyntheticData, provenance)."""
    supplement = tmp_path_factory.mktemp("dict") / "dicom-node.dic"
    supplement.write_text(DCMTK_DICTIONARY_SUPPLEMENT)
    return {**os.environ, "DCMDICTPATH": ":".join([*DCMTK_DICTIONARIES, str(supplement)])}


def synthetic_ct(pixels: np.ndarray | None = None) -> Dataset:
    """A complete single-frame CT Image Storage object as the node emits it, marked synthetic."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.ImageType = ["DERIVED", "SECONDARY", "AXIAL"]
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.SyntheticData = "YES"
    ds.StudyDate, ds.StudyTime = "20240105", "101500"
    ds.SeriesDate, ds.SeriesTime = "20240105", "103000"
    ds.AccessionNumber = "ACC0001"
    ds.Modality = "CT"
    ds.Manufacturer = "dicom-node"
    ds.ReferringPhysicianName = ""
    ds.SeriesDescription = "SYNTHETIC CT from MR (not for diagnosis)"
    ds.DerivationDescription = "Synthetic CT generated from MR by an ONNX model"
    ds.SourceImageSequence = [_reference(MRImageStorage, generate_uid())]
    ds.ContributingEquipmentSequence = [_contributing_equipment()]
    ds.PatientName = "Doe^Jane"
    ds.PatientID = "PAT-001"
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "F"
    ds.BodyPartExamined = "HEAD"
    ds.SliceThickness = "1.0"
    ds.KVP = ""
    ds.PatientPosition = "HFS"
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.StudyID = "1"
    ds.SeriesNumber = 901
    ds.AcquisitionNumber = 1
    ds.InstanceNumber = 1
    ds.ImagePositionPatient = [-120.0, -120.0, 35.5]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.FrameOfReferenceUID = generate_uid()
    ds.PositionReferenceIndicator = ""
    _set_pixels(ds, pixels if pixels is not None else _ct_pixels())
    ds.RescaleIntercept = "-1024"
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"
    block = ds.private_block(0x0071, PROVENANCE_PRIVATE_CREATOR, create=True)
    block.add_new(0x01, "UT", '{"model":"mr2ct","model_sha256":"ab12","node":"dicom-node"}')
    return ds


def _reference(sop_class: str, sop_instance: str) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = sop_class
    item.ReferencedSOPInstanceUID = sop_instance
    return item


def _contributing_equipment() -> Dataset:
    purpose = Dataset()
    purpose.CodeValue = "109103"
    purpose.CodingSchemeDesignator = "DCM"
    purpose.CodeMeaning = "Modifying Equipment"
    item = Dataset()
    item.Manufacturer = "dicom-node"
    item.ManufacturerModelName = "mr2ct"
    item.SoftwareVersions = "0.1.0"
    item.ContributionDateTime = "20240105103000"
    item.ContributionDescription = "Synthetic CT generated from MR"
    item.PurposeOfReferenceCodeSequence = [purpose]
    return item


def _ct_pixels() -> np.ndarray:
    rows, columns = np.mgrid[0:512, 0:512]
    return ((rows * 37 + columns * 11) % 2000 - 1000).astype(np.int16)


def _set_pixels(ds: Dataset, pixels: np.ndarray) -> None:
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = pixels.dtype.itemsize * 8
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if pixels.dtype.kind == "i" else 0
    ds.PixelSpacing = [0.75, 0.75]
    ds.PixelData = pixels.tobytes()


def save(ds: Dataset, path: Path) -> Path:
    ds.save_as(path, enforce_file_format=True)
    return path


def dcmsign_verify(
    path: Path, cert: Path | None, env: dict[str, str] | None = None
) -> tuple[int, str]:
    """Run ``dcmsign --verify [+cf CERT] FILE``; return its exit code and its log output."""
    command = ["dcmsign", "--verify", *(["+cf", str(cert)] if cert else []), str(path)]
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    return done.returncode, done.stdout + done.stderr


def dcmconv(source: Path, target: Path, option: str, env: dict[str, str] | None = None) -> Path:
    subprocess.run(["dcmconv", option, str(source), str(target)], check=True, env=env)
    return target


def verify_file(path: Path, trusted: list[x509.Certificate] | None = None) -> SignatureCheck:
    return verify_dataset(dcmread(path), trusted)


def assert_dcmsign_ok(path: Path, cert: Path, env: dict[str, str] | None = None) -> None:
    code, output = dcmsign_verify(path, cert, env)
    assert code == 0, output
    assert "Signature Verification : OK" in output


def assert_dcmsign_corrupted(path: Path, cert: Path) -> None:
    code, output = dcmsign_verify(path, cert)
    assert code == 101, output  # EXITCODE_SIGNATURE_VERIFICATION_FAILED
    assert "signature is invalid (document corrupted)" in output


@pytest.fixture
def signed_file(tmp_path: Path, signer: Signer) -> Iterator[Path]:
    ds = synthetic_ct()
    sign_dataset(ds, signer)
    yield save(ds, tmp_path / "signed.dcm")


def _flip_pixel_bit(path: Path) -> None:
    """Change one pixel in the file itself, as a tamperer with a hex editor would."""
    data = bytearray(path.read_bytes())
    value_start = data.rindex(b"\xe0\x7f\x10\x00OW\x00\x00") + 12  # tag, VR, 0000, length
    data[value_start + 2 * 100] ^= 0x01  # lowest bit of pixel 100
    path.write_bytes(bytes(data))


def test_dcmsign_verifies_signature_when_given_the_certificate(
    signed_file: Path, cert_path: Path, signer: Signer
) -> None:
    assert_dcmsign_ok(signed_file, cert_path)
    check = verify_file(signed_file, [signer.certificate])
    assert (check.status, check.certificate_trusted) == ("valid", True), check.reason
    assert check.signer == "CN=dicom-node signing test"
    ds = dcmread(signed_file)
    expected = {
        int(ds[keyword].tag)
        for keyword in (
            "SOPInstanceUID",
            "SyntheticData",
            "ImageType",
            "SeriesDescription",
            "ContributingEquipmentSequence",
            "SourceImageSequence",
            "PixelData",
            "FrameOfReferenceUID",
            "RescaleIntercept",
        )
    } | {PROVENANCE_CREATOR_TAG, PROVENANCE_RECORD_TAG}
    assert expected <= set(check.signed_tags)
    assert int(ds["PatientName"].tag) not in check.signed_tags
    mac = ds.MACParametersSequence[0]
    assert (mac.MACAlgorithm, mac.MACCalculationTransferSyntaxUID) == (
        "SHA256",
        "1.2.840.10008.1.2.1",
    )
    assert ds.DigitalSignaturesSequence[0].CertificateType == "X509_1993_SIG"


def test_dcmsign_flags_self_signed_certificate_it_was_not_given(
    signed_file: Path, signer: Signer
) -> None:
    code, output = dcmsign_verify(signed_file, cert=None)
    assert code == 101, output
    assert "signature is OK but certificate verification failed: self-signed certificate" in output
    assert verify_file(signed_file).certificate_trusted is None


def test_changed_pixel_invalidates_signature(signed_file: Path, cert_path: Path) -> None:
    _flip_pixel_bit(signed_file)
    assert_dcmsign_corrupted(signed_file, cert_path)
    check = verify_file(signed_file)
    assert check.status == "invalid"
    assert check.reason == "MAC mismatch: data changed after signing"


@pytest.mark.parametrize(
    ("tag", "forged"),
    [
        (0x0008103E, "CT HEAD"),  # SeriesDescription without the SYNTHETIC warning
        (0x0008001C, "NO"),  # SyntheticData
        (PROVENANCE_RECORD_TAG, '{"model":"none"}'),
    ],
    ids=["SeriesDescription", "SyntheticData", "provenance-record"],
)
def test_changed_marking_invalidates_signature(
    signed_file: Path, cert_path: Path, tag: int, forged: str
) -> None:
    ds = dcmread(signed_file)
    ds[tag].value = forged
    save(ds, signed_file)
    assert_dcmsign_corrupted(signed_file, cert_path)
    assert verify_file(signed_file).status == "invalid"


def test_removed_marking_invalidates_signature(signed_file: Path, cert_path: Path) -> None:
    ds = dcmread(signed_file)
    del ds.SyntheticData
    save(ds, signed_file)
    assert_dcmsign_corrupted(signed_file, cert_path)
    check = verify_file(signed_file)
    assert check.status == "invalid"
    assert "(0008,001C)" in check.reason and "missing" in check.reason


def test_removed_unsigned_attributes_keep_signature_valid(
    signed_file: Path, cert_path: Path
) -> None:
    ds = dcmread(signed_file)
    del ds.PatientName
    del ds.AccessionNumber
    save(ds, signed_file)
    assert_dcmsign_ok(signed_file, cert_path)
    assert verify_file(signed_file).status == "valid"


def test_implicit_vr_round_trip_keeps_signature_valid(
    signed_file: Path, cert_path: Path, dcmtk_env: dict[str, str]
) -> None:
    implicit = dcmconv(signed_file, signed_file.with_name("implicit.dcm"), "+ti", dcmtk_env)
    back = dcmconv(implicit, signed_file.with_name("explicit.dcm"), "+te", dcmtk_env)
    assert dcmread(implicit).file_meta.TransferSyntaxUID == ImplicitVRLittleEndian
    for path in (implicit, back):
        assert_dcmsign_ok(path, cert_path, dcmtk_env)
        assert verify_file(path).status == "valid"


def test_dcmtk_needs_dictionary_supplement_after_implicit_round_trip(
    signed_file: Path, cert_path: Path
) -> None:
    """DCMTK 3.6.7 does not know SyntheticData or the private record: they come back as UN,
    which PS3.3 C.12.1.1.3.1.1 makes unsignable; pydicom knows both and still verifies."""
    implicit = dcmconv(signed_file, signed_file.with_name("implicit.dcm"), "+ti")
    back = dcmconv(implicit, signed_file.with_name("explicit.dcm"), "+te")
    code, output = dcmsign_verify(back, cert_path)
    assert code == 101, output
    assert "signature contains attribute that is not signable" in output
    assert verify_file(back).status == "valid"


def test_8_bit_pixel_data_is_signed_as_ow_and_survives_implicit_vr(
    tmp_path: Path, signer: Signer, cert_path: Path, dcmtk_env: dict[str, str]
) -> None:
    ds = synthetic_ct(np.arange(64 * 64, dtype=np.uint8).reshape(64, 64))
    sign_dataset(ds, signer)
    assert ds["PixelData"].VR == "OW"
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    implicit = save(ds, tmp_path / "implicit.dcm")
    assert_dcmsign_ok(implicit, cert_path, dcmtk_env)
    assert verify_file(implicit).status == "valid"


def test_dciodvfy_reports_no_errors_from_signature_attributes(
    tmp_path: Path, signed_file: Path
) -> None:
    unsigned = save(synthetic_ct(), tmp_path / "unsigned.dcm")
    signed_errors = _dciodvfy_errors(signed_file)
    assert signed_errors == _dciodvfy_errors(unsigned)
    assert [line for line in signed_errors if SYNTHETIC_DATA_UNKNOWN not in line] == []


def _dciodvfy_errors(path: Path) -> list[str]:
    done = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, check=False)
    return [line for line in (done.stdout + done.stderr).splitlines() if "Error" in line]


def test_second_signature_verifies_alongside_the_first(
    tmp_path: Path, signer: Signer, cert_path: Path
) -> None:
    ds = synthetic_ct()
    first = sign_dataset(ds, signer)
    second = sign_dataset(ds, signer, ["SeriesDescription", PROVENANCE_RECORD_TAG])
    assert first != second
    assert [item.MACIDNumber for item in ds.MACParametersSequence] == [0, 1]
    assert list(ds.MACParametersSequence[1].DataElementsSigned) == [
        0x0008103E,
        PROVENANCE_CREATOR_TAG,
        PROVENANCE_RECORD_TAG,
    ]
    path = save(ds, tmp_path / "twice.dcm")
    code, output = dcmsign_verify(path, cert_path)
    assert code == 0 and output.count("Signature Verification : OK") == 2, output
    check = verify_file(path)
    assert (check.status, check.signature_uid) == ("valid", second)


def test_verify_dataset_accepts_signature_made_by_dcmsign(
    tmp_path: Path, key_files: tuple[Path, Path]
) -> None:
    unsigned = save(synthetic_ct(), tmp_path / "unsigned.dcm")
    signed = tmp_path / "dcmsign.dcm"
    tags = [
        "0008,0008",
        "0008,001c",
        "0008,103e",
        "0008,2112",
        "0018,a001",
        "0071,0010",
        "0071,1001",
        "7fe0,0010",
    ]
    command = ["dcmsign", "--sign", *map(str, key_files), "-pw", "+m2", "+sp", "14"]
    command += [arg for tag in tags for arg in ("-t", tag)]
    subprocess.run([*command, str(unsigned), str(signed)], check=True, capture_output=True)
    check = verify_file(signed)
    assert check.status == "valid", check.reason
    assert len(check.signed_tags) == len(tags)


def test_verify_dataset_rejects_mac_algorithm_it_does_not_support(
    tmp_path: Path, key_files: tuple[Path, Path]
) -> None:
    unsigned = save(synthetic_ct(), tmp_path / "unsigned.dcm")
    signed = tmp_path / "ripemd.dcm"
    command = ["dcmsign", "--sign", *map(str, key_files), "-pw", str(unsigned), str(signed)]
    subprocess.run(command, check=True, capture_output=True)  # dcmsign default: RIPEMD160
    check = verify_file(signed)
    assert check.status == "invalid"
    assert "RIPEMD160" in check.reason


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    description=st.text(st.sampled_from("AZaz09 ^-_.äé中€"), min_size=0, max_size=63),
    position=st.lists(
        st.floats(-500, 500, allow_nan=False).map(lambda v: round(v, 3)), min_size=3, max_size=3
    ),
)
def test_dcmsign_agrees_on_odd_lengths_padding_and_utf8(
    tmp_path: Path, signer: Signer, cert_path: Path, description: str, position: list[float]
) -> None:
    ds = synthetic_ct(np.zeros((4, 4), dtype=np.int16))
    ds.SeriesDescription = description
    ds.ImagePositionPatient = position
    path = save(ds, tmp_path / "prop.dcm")
    ds = dcmread(path)
    sign_dataset(ds, signer)
    save(ds, path)
    assert_dcmsign_ok(path, cert_path)
    assert verify_file(path).status == "valid"


def test_unsigned_dataset_is_absent() -> None:
    check = verify_dataset(synthetic_ct())
    assert (check.status, check.signer, check.signed_tags) == ("absent", None, ())


def test_altered_signature_bytes_are_invalid(signer: Signer) -> None:
    ds = synthetic_ct()
    sign_dataset(ds, signer)
    item = ds.DigitalSignaturesSequence[0]
    signature = bytearray(item.Signature)
    signature[17] ^= 0xFF
    item.Signature = bytes(signature)
    check = verify_dataset(ds)
    assert check.status == "invalid"
    assert check.reason.startswith("RSA check failed")


def test_malformed_signature_attributes_are_invalid(signer: Signer) -> None:
    ds = synthetic_ct()
    sign_dataset(ds, signer)
    del ds.MACParametersSequence
    check = verify_dataset(ds)
    assert check.status == "invalid"
    assert "MAC Parameters" in check.reason


def test_untrusted_certificate_is_reported_but_signature_stays_valid(
    tmp_path: Path, signer: Signer
) -> None:
    other_key, other_cert = tmp_path / "other.key", tmp_path / "other.crt"
    create_self_signed(other_key, other_cert, "someone else", key_bits=2048)
    ds = synthetic_ct()
    sign_dataset(ds, signer)
    check = verify_dataset(ds, [Signer.from_files(other_key, other_cert).certificate])
    assert (check.status, check.certificate_trusted) == ("valid", False)
    assert "NOT trusted" in check.reason


def test_trusted_signature_is_reported_even_when_a_stranger_signed_last(
    tmp_path: Path, signer: Signer
) -> None:
    stranger_key, stranger_cert = tmp_path / "stranger.key", tmp_path / "stranger.crt"
    create_self_signed(stranger_key, stranger_cert, "stranger", key_bits=2048)
    ds = synthetic_ct()
    ours = sign_dataset(ds, signer)
    theirs = sign_dataset(ds, Signer.from_files(stranger_key, stranger_cert))
    check = verify_dataset(ds, [signer.certificate])
    assert (check.status, check.signature_uid, check.certificate_trusted) == ("valid", ours, True)
    check = verify_dataset(ds)
    assert (check.signature_uid, check.signer) == (theirs, "CN=stranger")


def test_signature_time_is_recorded_in_utc(signer: Signer) -> None:
    ds = synthetic_ct()
    when = dt.datetime.now(dt.timezone(dt.timedelta(hours=-5)))
    sign_dataset(ds, signer, when=when)
    recorded = ds.DigitalSignaturesSequence[0].DigitalSignatureDateTime
    assert recorded == when.astimezone(dt.UTC).strftime("%Y%m%d%H%M%S.%f+0000")


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (["FileMetaInformationGroupLength"], "may not be signed"),
        ([0x00080000], "may not be signed"),
        (["NotAKeyword"], "unknown DICOM keyword"),
        (["WindowCenter"], "none of the data elements"),
    ],
)
def test_sign_dataset_refuses_what_it_cannot_sign(
    signer: Signer, request_: list[str | int], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        sign_dataset(synthetic_ct(), signer, request_)


def test_sign_dataset_refuses_unknown_vr(signer: Signer) -> None:
    ds = synthetic_ct()
    ds.add_new(0x00091010, "UN", b"opaque")
    with pytest.raises(ValueError, match="VR UN"):
        sign_dataset(ds, signer, ["SOPInstanceUID", 0x00091010])
    assert "DigitalSignaturesSequence" not in ds


def test_sign_dataset_refuses_encapsulated_pixel_data(signer: Signer) -> None:
    ds = synthetic_ct()
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.PixelData = encapsulate([b"\xff\xd8\xff\xd9"])
    with pytest.raises(ValueError, match="encapsulated"):
        sign_dataset(ds, signer)


def test_sign_dataset_refuses_naive_time_and_invalid_certificate(signer: Signer) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        sign_dataset(synthetic_ct(), signer, when=dt.datetime(2030, 1, 1))
    with pytest.raises(ValueError, match="is not valid at"):
        sign_dataset(synthetic_ct(), signer, when=dt.datetime(2000, 1, 1, tzinfo=dt.UTC))


def test_synthetic_series_signature_covers_the_provenance_record(
    tmp_path: Path, signer: Signer
) -> None:
    series = axial_series(StudySpec(), ramp_pixels(slices=2, rows=64, cols=64))
    paths = write_series(series, tmp_path / "t1")
    now = dt.datetime.now(dt.UTC)
    out = synthetic_series(
        paths, str(series[0].SeriesInstanceUID), marking=Marking(signer=signer), now=now
    )
    check = verify_dataset(out[0])
    assert check.status == "valid"
    assert set(block_tags(out[0])) <= set(check.signed_tags) and block_tags(out[0])
    block = out[0].private_block(0x0071, PROVENANCE_PRIVATE_CREATOR)
    block[0x01].value = block[0x01].value.replace("mr-t1-to-ct", "other-model")
    assert verify_dataset(out[0]).status == "invalid"
