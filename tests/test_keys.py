"""First-run key/certificate creation and loading of the node's signing identity."""

from __future__ import annotations

import datetime as dt
import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from dicom_node.evidence.keys import Signer, create_self_signed


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def pair(tmp_path: Path) -> tuple[Path, Path]:
    key_path, cert_path = tmp_path / "node.key", tmp_path / "node.crt"
    create_self_signed(key_path, cert_path, "dicom-node", days=30, key_bits=2048)
    return key_path, cert_path


def test_creates_owner_only_key_and_matching_self_signed_certificate(
    pair: tuple[Path, Path],
) -> None:
    key_path, cert_path = pair
    assert mode(key_path) == 0o600
    assert mode(cert_path) == 0o644
    signer = Signer.from_files(key_path, cert_path)
    assert signer.subject == "CN=dicom-node"
    assert signer.certificate.issuer == signer.certificate.subject
    now = dt.datetime.now(dt.UTC)
    assert signer.certificate.not_valid_before_utc <= now - dt.timedelta(minutes=59)
    assert signer.certificate.not_valid_after_utc >= now + dt.timedelta(days=29)


def test_key_is_owner_only_even_with_a_permissive_umask(tmp_path: Path) -> None:
    previous = os.umask(0)
    try:
        create_self_signed(tmp_path / "k.pem", tmp_path / "c.pem", "x", key_bits=2048)
    finally:
        os.umask(previous)
    assert mode(tmp_path / "k.pem") == 0o600


def test_refuses_to_overwrite_unless_asked(pair: tuple[Path, Path]) -> None:
    key_path, cert_path = pair
    before = key_path.read_bytes(), cert_path.read_bytes()
    with pytest.raises(FileExistsError, match=str(key_path)):
        create_self_signed(key_path, cert_path, "dicom-node", key_bits=2048)
    assert (key_path.read_bytes(), cert_path.read_bytes()) == before

    key_path.chmod(0o644)
    create_self_signed(key_path, cert_path, "replaced", key_bits=2048, overwrite=True)
    assert key_path.read_bytes() != before[0]
    assert mode(key_path) == 0o600
    assert Signer.from_files(key_path, cert_path).subject == "CN=replaced"


def test_refuses_when_only_the_certificate_exists(tmp_path: Path) -> None:
    cert_path = tmp_path / "node.crt"
    cert_path.write_text("existing")
    with pytest.raises(FileExistsError, match=str(cert_path)):
        create_self_signed(tmp_path / "node.key", cert_path, "dicom-node", key_bits=2048)
    assert not (tmp_path / "node.key").exists()


def test_mismatched_key_and_certificate_are_rejected_naming_both(
    tmp_path: Path, pair: tuple[Path, Path]
) -> None:
    other_key, other_cert = tmp_path / "other.key", tmp_path / "other.crt"
    create_self_signed(other_key, other_cert, "other", key_bits=2048)
    cert_path = pair[1]
    with pytest.raises(ValueError, match="does not match") as error:
        Signer.from_files(other_key, cert_path)
    assert str(other_key) in str(error.value) and str(cert_path) in str(error.value)


def test_missing_files_are_named(tmp_path: Path, pair: tuple[Path, Path]) -> None:
    key_path, cert_path = pair
    missing = tmp_path / "absent.pem"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        Signer.from_files(missing, cert_path)
    with pytest.raises(FileNotFoundError, match=str(missing)):
        Signer.from_files(key_path, missing)


def test_unparsable_files_are_named(tmp_path: Path, pair: tuple[Path, Path]) -> None:
    key_path, cert_path = pair
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not PEM at all")
    with pytest.raises(ValueError, match=str(garbage)):
        Signer.from_files(garbage, cert_path)
    with pytest.raises(ValueError, match=str(garbage)):
        Signer.from_files(key_path, garbage)
    with pytest.raises(ValueError, match=str(tmp_path)):
        Signer.from_files(tmp_path, cert_path)  # a directory cannot be read


def test_encrypted_key_needs_its_password(tmp_path: Path, pair: tuple[Path, Path]) -> None:
    key_path, cert_path = pair
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    encrypted = tmp_path / "encrypted.key"
    encrypted.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"s3cret"),
        )
    )
    assert Signer.from_files(encrypted, cert_path, password=b"s3cret").subject == "CN=dicom-node"
    for wrong in (None, b"wrong"):
        with pytest.raises(ValueError, match=str(encrypted)):
            Signer.from_files(encrypted, cert_path, password=wrong)


def test_weak_keys_are_refused(pair: tuple[Path, Path]) -> None:
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    certificate = Signer.from_files(*pair).certificate
    with pytest.raises(ValueError, match="too weak"):
        Signer(weak, certificate)
    with pytest.raises(ValueError, match="at least 2048"):
        create_self_signed(
            pair[0].with_name("w.key"), pair[1].with_name("w.crt"), "w", key_bits=1024
        )
