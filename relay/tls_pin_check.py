"""Verify the relay's TLS certificate by its SPKI pin, as an agent does: a file to copy verbatim.

Python 3.8-compatible, standard library plus ``cryptography`` only, no posassist imports: the agent
team copies this file to ``agent/tlspin.py`` (agent/ must not import relay/); ``relay.tls``
re-exports it for the relay, the console and the tests. ``tests/relay/test_tls.py`` proves it
under the Python 3.8 interpreter in ``.venv38``.

The pin (the enrolment token's ``tls_pin``) is the lowercase hex SHA-256 of the relay
certificate's DER SubjectPublicKeyInfo: it survives re-issuing the certificate with the same key,
and needs no CA. The agent connects with certificate checks off and checks the pin itself, right
after the TLS handshake and before it sends a single protocol byte::

    ctx = client_ssl_context_for_pin(invite.tls_pin)
    async with websockets.asyncio.client.connect(url, ssl=ctx) as ws:
        check_pin(ws.transport.get_extra_info("ssl_object"), invite.tls_pin)  # raises on mismatch
        ...  # only now send Hello

The websocket upgrade request (no credentials in it) is the only thing sent before the check.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import ssl

from cryptography import x509
from cryptography.hazmat.primitives import serialization

__all__ = [
    "PinMismatchError",
    "check_pin",
    "client_ssl_context_for_pin",
    "spki_pin_from_der",
    "validate_pin",
]

_PIN = re.compile(r"\A[0-9a-f]{64}\Z")


class PinMismatchError(ssl.SSLCertVerificationError):
    """The server's certificate key is not the pinned one: not our relay, close at once."""

    def __init__(self, expected: str, got: str) -> None:
        super().__init__(f"relay TLS key pin mismatch: expected {expected}, got {got}")
        self.expected = expected
        self.got = got


def validate_pin(pin: str) -> str:
    """``pin`` if it is 64 lowercase hex digits (a SHA-256); ValueError otherwise."""
    if not isinstance(pin, str) or not _PIN.match(pin):
        raise ValueError("a TLS pin is 64 lowercase hex digits (SHA-256 of the SPKI)")
    return pin


def spki_pin_from_der(cert_der: bytes) -> str:
    """The pin of a DER certificate: lowercase hex SHA-256 of its DER SubjectPublicKeyInfo."""
    public_key = x509.load_der_x509_certificate(cert_der).public_key()
    spki = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(spki).hexdigest()


def client_ssl_context_for_pin(pin: str) -> ssl.SSLContext:
    """A client context for a relay known only by its pin: TLS 1.2+, no CA or hostname check.

    Certificate checks are off because the pin replaces them; the caller MUST call
    :func:`check_pin` on the connection before sending anything.
    """
    validate_pin(pin)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = False  # must go before CERT_NONE
    context.verify_mode = ssl.CERT_NONE
    return context


def check_pin(ssl_object: ssl.SSLObject | ssl.SSLSocket | None, pin: str) -> None:
    """Raise :class:`PinMismatchError` unless the peer's certificate key matches ``pin``.

    Args:
        ssl_object: the connection's TLS object, e.g. ``transport.get_extra_info("ssl_object")``
            or a wrapped socket; None (a connection that isn't TLS) is a mismatch too.
        pin: the expected pin from the enrolment token.
    """
    validate_pin(pin)
    der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    if not der:
        raise PinMismatchError(pin, "no certificate")
    got = spki_pin_from_der(der)
    if not hmac.compare_digest(got, pin):
        raise PinMismatchError(pin, got)
