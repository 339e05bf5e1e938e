"""TLS for the relay: the server context, the certificate's SPKI pin, and clients that check it.

The pin goes into enrolment tokens (``tls_pin``); agents and consoles verify the relay by it:
over HTTP through client/http.py, over websockets through client/tlspin.py; the pin itself is
computed and compared in protocol/pins.py. ``relay/__main__.py`` loads the context for
``serve --tls-cert F --tls-key F`` and keeps the pin on ``RelayConfig``.
"""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING

from posassist.client import http as client_http
from posassist.protocol.pins import spki_pin_from_pem

if TYPE_CHECKING:
    from os import PathLike

    import aiohttp

__all__ = ["SERVER_CIPHERS", "aiohttp_pin", "server_ssl_context", "spki_pin"]

#: TLS 1.2 suites: forward secrecy and AEAD only. (TLS 1.3 suites are all of that already and are
#: set by OpenSSL, not by this string.) Python 3.8 agents on Windows 7 bring OpenSSL 1.1.1, which
#: speaks every one of these.
SERVER_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"


def server_ssl_context(
    cert_file: str | PathLike[str],
    key_file: str | PathLike[str],
    *,
    key_password: bytes | None = None,
) -> ssl.SSLContext:
    """A server context for ``cert_file`` (PEM, leaf first, then any chain) and its key.

    TLS 1.2 or newer, ECDHE with AES-GCM or ChaCha20 only, no compression or renegotiation.

    Raises:
        ValueError: the files are missing, unreadable, not PEM, or the key doesn't match
            the certificate; the message names both files.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(SERVER_CIPHERS)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    context.options |= ssl.OP_NO_RENEGOTIATION
    try:
        context.load_cert_chain(cert_file, key_file, password=key_password)
    except (OSError, ssl.SSLError) as exc:
        # ssl.SSLError is an OSError; its text ("[SSL] PEM lib") alone names neither file.
        raise ValueError(
            f"cannot use TLS certificate {cert_file} with key {key_file}: {exc}"
        ) from exc
    return context


def spki_pin(cert_pem: bytes | str) -> str:
    """The pin of a PEM certificate (the first one, if a chain): protocol/pins.py.

    Lowercase hex SHA-256 of the DER SubjectPublicKeyInfo, the enrolment token's ``tls_pin``.
    """
    return spki_pin_from_pem(cert_pem.encode("ascii") if isinstance(cert_pem, str) else cert_pem)


def aiohttp_pin(pin: str) -> aiohttp.Fingerprint:
    """``ssl=aiohttp_pin(pin)`` makes an aiohttp request trust exactly the relay with ``pin``.

    The one pin rule of client/http.py (checked after the handshake, before the request).
    """
    return client_http.aiohttp_pin(pin)
