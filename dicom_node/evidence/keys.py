"""Signing identity of the node: an RSA private key and its X.509 certificate.

DICOM Digital Signatures (PS3.15 Annex C, PS3.3 C.12.1.1.3) carry the signer's X.509
certificate in Certificate of Signer (0400,0115) with Certificate Type ``X509_1993_SIG``,
and the Base RSA Digital Signature Profile (PS3.15 C.1) signs with RSA. This module

* creates a self-signed RSA key/certificate pair for a first run, so that a fresh node
  can sign its synthetic output before a site CA has issued it a certificate, and
* loads a key/certificate pair from PEM files into a :class:`Signer`, checking that the
  two belong together, so that a misconfiguration fails at start-up with a message
  naming the files instead of producing signatures nobody can verify.

The private key is written with mode 0600. The certificate is written with mode 0644:
it is public by design (every signed object embeds it), and verifiers such as
``dcmsign --verify +cf CERT`` need to read it.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

KEY_FILE_MODE = 0o600
CERT_FILE_MODE = 0o644
MIN_RSA_KEY_BITS = 2048
DEFAULT_RSA_KEY_BITS = 3072
# Backdating notBefore keeps a certificate made in the same second as the first signature
# (or checked by a verifier whose clock lags a little) from reading as "not yet valid".
NOT_BEFORE_BACKDATE = dt.timedelta(hours=1)


@dataclass(frozen=True)
class Signer:
    """An RSA private key together with the X.509 certificate of its public key.

    Construction checks that the key is RSA of at least 2048 bits and that the
    certificate's public key is the key's own, so a ``Signer`` can always produce
    signatures that verify against the certificate it embeds.
    """

    private_key: rsa.RSAPrivateKey
    certificate: x509.Certificate

    def __post_init__(self) -> None:
        if not isinstance(self.private_key, rsa.RSAPrivateKey):
            raise ValueError("the signing key must be an RSA private key")
        if self.private_key.key_size < MIN_RSA_KEY_BITS:
            raise ValueError(
                f"RSA key of {self.private_key.key_size} bits is too weak; "
                f"at least {MIN_RSA_KEY_BITS} bits are required"
            )
        if not _key_matches_certificate(self.private_key, self.certificate):
            raise ValueError("the private key does not match the certificate's public key")

    @property
    def subject(self) -> str:
        """The certificate subject as an RFC 4514 string, e.g. ``CN=dicom-node``."""
        return self.certificate.subject.rfc4514_string()

    @classmethod
    def from_files(
        cls, key_path: Path | str, cert_path: Path | str, password: bytes | None = None
    ) -> Signer:
        """Load a PEM private key (optionally encrypted with *password*) and PEM certificate.

        Raises FileNotFoundError naming the missing file, and ValueError naming the file
        that cannot be read or parsed, or both files when the key does not match the
        certificate.
        """
        key_path, cert_path = Path(key_path), Path(cert_path)
        private_key = _load_private_key(key_path, password)
        certificate = _load_certificate(cert_path)
        if not _key_matches_certificate(private_key, certificate):
            raise ValueError(
                f"private key {key_path} does not match the public key of certificate {cert_path}"
            )
        return cls(private_key=private_key, certificate=certificate)


def create_self_signed(
    key_path: Path,
    cert_path: Path,
    common_name: str,
    days: int = 3650,
    *,
    overwrite: bool = False,
    key_bits: int = DEFAULT_RSA_KEY_BITS,
) -> None:
    """Write a new RSA key (PEM, mode 0600) and a self-signed certificate for it (PEM, 0644).

    The certificate's subject and issuer are ``CN=<common_name>``; it is valid from one
    hour ago for *days* days and is marked for digital signature and non-repudiation, the
    uses of a DICOM signing certificate. Existing files are left alone and FileExistsError
    is raised unless *overwrite* is true.
    """
    if days < 1:
        raise ValueError(f"certificate validity must be at least one day, not {days}")
    if key_bits < MIN_RSA_KEY_BITS:
        raise ValueError(f"RSA keys need at least {MIN_RSA_KEY_BITS} bits, not {key_bits}")
    if not overwrite:
        for path in (key_path, cert_path):
            if path.exists():
                raise FileExistsError(f"{path} already exists; pass overwrite=True to replace it")
    private_key = rsa.generate_private_key(public_exponent=65537, key_size=key_bits)
    certificate = _self_signed_certificate(private_key, common_name, days)
    key_pem = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _write_file(key_path, key_pem, KEY_FILE_MODE, overwrite)
    _write_file(
        cert_path, certificate.public_bytes(serialization.Encoding.PEM), CERT_FILE_MODE, overwrite
    )


def _self_signed_certificate(
    private_key: rsa.RSAPrivateKey, common_name: str, days: int
) -> x509.Certificate:
    """Build a self-signed signing certificate (X.509 v3, SHA-256 with RSA)."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    not_before = dt.datetime.now(dt.UTC).replace(microsecond=0) - NOT_BEFORE_BACKDATE
    public_key = private_key.public_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_before + NOT_BEFORE_BACKDATE + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_signing_key_usage(), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )
    return builder.sign(private_key, hashes.SHA256())


def _signing_key_usage() -> x509.KeyUsage:
    """Key usage of a certificate that signs data, not other certificates."""
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=True,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


def _write_file(path: Path, data: bytes, mode: int, overwrite: bool) -> None:
    """Write *data* to *path* so that the file never exists with wider permissions than *mode*."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | (os.O_TRUNC if overwrite else os.O_EXCL)
    with os.fdopen(os.open(path, flags, mode), "wb") as stream:
        os.fchmod(stream.fileno(), mode)
        stream.write(data)


def _read_file(path: Path, what: str) -> bytes:
    """Read *path*, turning any failure other than absence into a ValueError naming it."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} file {path} does not exist") from None
    except OSError as exc:
        raise ValueError(f"cannot read {what} file {path}: {exc.strerror or exc}") from exc


def _load_private_key(path: Path, password: bytes | None) -> rsa.RSAPrivateKey:
    """Parse a PEM RSA private key, with an error message that names *path*."""
    data = _read_file(path, "private key")
    try:
        key = serialization.load_pem_private_key(data, password=password)
    except TypeError as exc:
        raise ValueError(f"private key file {path}: {exc}") from exc
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise ValueError(
            f"private key file {path} is not a PEM private key or the password is wrong"
        ) from exc
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError(f"private key file {path} holds a {type(key).__name__}, not an RSA key")
    return key


def _load_certificate(path: Path) -> x509.Certificate:
    """Parse a PEM X.509 certificate, with an error message that names *path*."""
    data = _read_file(path, "certificate")
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError as exc:
        raise ValueError(f"certificate file {path} is not a PEM X.509 certificate") from exc


def _key_matches_certificate(private_key: rsa.RSAPrivateKey, certificate: x509.Certificate) -> bool:
    """True when the certificate certifies the public half of *private_key*."""
    cert_key = certificate.public_key()
    return (
        isinstance(cert_key, rsa.RSAPublicKey)
        and cert_key.public_numbers() == private_key.public_key().public_numbers()
    )
