"""Test-only certificates: a self-signed cert and key for 127.0.0.1 and localhost, made on the spot.

Never used outside tests: a real relay's certificate comes from its operator (--tls-cert/-key).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

if TYPE_CHECKING:
    from pathlib import Path

    from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes


@dataclass(frozen=True, slots=True)
class SelfSignedCertificate:
    """A PEM certificate and its unencrypted PEM private key."""

    cert_pem: bytes
    key_pem: bytes
    key: CertificateIssuerPrivateKeyTypes

    @property
    def cert_der(self) -> bytes:
        return x509.load_pem_x509_certificate(self.cert_pem).public_bytes(
            serialization.Encoding.DER
        )

    def write(self, directory: Path, stem: str = "relay") -> tuple[Path, Path]:
        """Write ``stem.crt`` and ``stem.key`` into ``directory``; returns (cert, key) paths."""
        directory.mkdir(parents=True, exist_ok=True)
        cert_file, key_file = directory / f"{stem}.crt", directory / f"{stem}.key"
        cert_file.write_bytes(self.cert_pem)
        key_file.write_bytes(self.key_pem)
        key_file.chmod(0o600)
        return cert_file, key_file


def make_key(kind: str = "ec") -> CertificateIssuerPrivateKeyTypes:
    """A fresh P-256 key (fast), or RSA-2048 with ``kind="rsa"``."""
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ec.generate_private_key(ec.SECP256R1())


def make_certificate(
    *,
    key: CertificateIssuerPrivateKeyTypes | None = None,
    common_name: str = "127.0.0.1",
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
) -> SelfSignedCertificate:
    """A self-signed server certificate for 127.0.0.1 and localhost (SAN), valid for a day.

    Pass the same ``key`` twice to re-issue a certificate with an unchanged SPKI pin.
    """
    key = key if key is not None else make_key()
    now = dt.datetime.now(dt.UTC)
    not_before = not_before or now - dt.timedelta(minutes=5)
    not_after = not_after or now + dt.timedelta(days=1)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return SelfSignedCertificate(cert.public_bytes(serialization.Encoding.PEM), key_pem, key)
