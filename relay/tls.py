"""TLS for the relay: the server context, the certificate's SPKI pin, and clients that check it.

The pin goes into enrolment tokens (``tls_pin``); agents verify the relay by it (agent/tlspin.py).

Wiring (``relay/__main__.py``, ``serve --tls-cert F --tls-key F``; ``create_app`` needs nothing)::

    from posassist.relay.tls import server_ssl_context, spki_pin

    ssl_context = server_ssl_context(args.tls_cert, args.tls_key)   # ValueError: print it, exit 2
    tls_pin = spki_pin(args.tls_cert.read_bytes())                  # keep on RelayConfig
    web.run_app(app, host=..., port=..., ssl_context=ssl_context)
    # enrolment tokens then carry relay_url="wss://host:port" and tls_pin=tls_pin

The console (aiohttp client) checks the pin before its request is sent::

    async with session.get(url, ssl=aiohttp_pin(tls_pin)) as resp: ...

The agent (websockets, Python 3.8) uses ``agent/tlspin.py``; the pin itself is computed and
compared in ``protocol/pins.py``, shared by both.
"""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING

import aiohttp

from posassist.protocol.pins import PinMismatch, check_pin, spki_pin_from_pem, validate_pin

if TYPE_CHECKING:
    import asyncio
    from os import PathLike

__all__ = ["SERVER_CIPHERS", "SpkiPin", "aiohttp_pin", "server_ssl_context", "spki_pin"]

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


class SpkiPin(aiohttp.Fingerprint):
    """An aiohttp ``ssl=`` value that accepts the server whose certificate key has this pin.

    aiohttp checks a ``Fingerprint`` right after the TLS handshake, before writing the request;
    this one compares the SPKI pin instead of the whole certificate's hash, so a relay may
    re-issue its certificate with the same key. A mismatch raises
    ``aiohttp.ServerFingerprintMismatch``.
    """

    def __init__(self, pin: str) -> None:
        super().__init__(bytes.fromhex(validate_pin(pin)))
        self.pin = pin

    def check(self, transport: asyncio.Transport) -> None:
        ssl_object = transport.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        try:
            check_pin(der or b"", self.pin)
        except PinMismatch as exc:
            peer = transport.get_extra_info("peername") or ("?", 0)
            got = bytes.fromhex(exc.got) if len(exc.got) == 64 else b""
            raise aiohttp.ServerFingerprintMismatch(
                self.fingerprint, got, peer[0], peer[1]
            ) from exc


def aiohttp_pin(pin: str) -> SpkiPin:
    """``ssl=aiohttp_pin(pin)`` makes an aiohttp request trust exactly the relay with ``pin``."""
    return SpkiPin(pin)
