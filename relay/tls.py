"""TLS for the relay: a server context from certificate files, and the key pin for tokens."""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING

from protocol.pins import spki_pin_from_pem

if TYPE_CHECKING:
    from pathlib import Path


def server_ssl_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    """TLS 1.2+ server context with the default (modern) cipher choice."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(cert_file), str(key_file))
    return context


def spki_pin(cert_pem: bytes) -> str:
    """Lowercase hex SHA-256 of the certificate's SubjectPublicKeyInfo (the enrolment pin)."""
    return spki_pin_from_pem(cert_pem)
