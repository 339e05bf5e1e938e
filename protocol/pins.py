"""TLS public-key pins: SHA-256 of a certificate's SubjectPublicKeyInfo, as lowercase hex.

The relay puts its pin in enrolment tokens (docs/protocol.md#enrolment); agents compare it with
the certificate the relay presents, so no certificate authority has to be trusted on a till.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from typing import TYPE_CHECKING

from .errors import EXIT_REFUSED, PosAssistError

if TYPE_CHECKING:
    from cryptography import x509

# cryptography's x509 and serialization cost about 2 MB of RSS: they are imported when a
# certificate is read (a TLS relay), not when the module is (every agent imports it).

__all__ = [
    "PIN_PATTERN",
    "PinMismatch",
    "check_pin",
    "spki_pin_from_der",
    "spki_pin_from_pem",
    "validate_pin",
]

#: A pin is 64 lowercase hex digits: the SHA-256 of the certificate's SubjectPublicKeyInfo.
PIN_PATTERN = re.compile(r"\A[0-9a-f]{64}\Z")


class PinMismatch(PosAssistError):
    """The relay's certificate does not carry the public key the enrolment token pinned."""

    close_code = 1008
    exit_code = EXIT_REFUSED
    public_reason = "TLS public key does not match the pin"
    public_reason_zh = "服务器的TLS密钥与登记的不符"

    def __init__(self, message: str, *, expected: str = "", got: str = "") -> None:
        super().__init__(message)
        self.expected = expected
        self.got = got


def validate_pin(pin: str) -> str:
    """``pin`` if it is 64 lowercase hex digits (a SHA-256); ValueError otherwise."""
    if not isinstance(pin, str) or not PIN_PATTERN.match(pin):
        raise ValueError("a TLS pin is 64 lowercase hex digits (SHA-256 of the SPKI)")
    return pin


def _pin(cert: x509.Certificate) -> str:
    from cryptography.hazmat.primitives import serialization

    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(spki).hexdigest()


def spki_pin_from_pem(cert_pem: bytes) -> str:
    """The pin of a PEM certificate (what ``posassist-relay serve --tls-cert`` advertises)."""
    from cryptography import x509

    return _pin(x509.load_pem_x509_certificate(cert_pem))


def spki_pin_from_der(cert_der: bytes) -> str:
    """The pin of a DER certificate (what ``SSLObject.getpeercert(binary_form=True)`` gives)."""
    from cryptography import x509

    return _pin(x509.load_der_x509_certificate(cert_der))


def check_pin(cert_der: bytes, pin: str) -> None:
    """Return if the certificate's key matches ``pin``; raise PinMismatch otherwise."""
    try:
        actual = spki_pin_from_der(cert_der)
    except ValueError:
        raise PinMismatch("the relay sent no readable certificate", expected=pin) from None
    if not hmac.compare_digest(actual, pin):
        raise PinMismatch(
            f"relay key {actual[:16]}… is not the pinned {pin[:16]}…", expected=pin, got=actual
        )
