"""TLS public-key pins: SHA-256 of a certificate's SubjectPublicKeyInfo, as lowercase hex.

The relay puts its pin in enrolment tokens (docs/protocol.md#enrolment); agents compare it with
the certificate the relay presents, so no certificate authority has to be trusted on a till.
"""

from __future__ import annotations

import hashlib
import hmac
import re

from .der import certificate_facts, pem_to_der
from .errors import EXIT_REFUSED, PosAssistError

# The certificate is read by protocol/der.py, not cryptography's x509 (8.5 MB of Rust library
# mapped into every till that talks TLS; docs/notes/mem-status.md).

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


def spki_pin_from_der(cert_der: bytes) -> str:
    """The pin of a DER certificate (what ``SSLObject.getpeercert(binary_form=True)`` gives);
    ValueError if it is not a certificate."""
    return hashlib.sha256(certificate_facts(cert_der).spki).hexdigest()


def spki_pin_from_pem(cert_pem: bytes) -> str:
    """The pin of a PEM certificate (what ``posassist-relay serve --tls-cert`` advertises)."""
    return spki_pin_from_der(pem_to_der(cert_pem))


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
