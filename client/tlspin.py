"""Connect to a relay known only by its TLS key pin (the enrolment token's ``tls_pin``).

Python 3.8-compatible. Certificate checks are off in the context because the pin replaces them:
the caller MUST call :func:`check_pin` on the connection before sending a single protocol byte::

    async with connect(url, ssl=client_ssl_context_for_pin(pin)) as ws:
        check_pin(ws.transport.get_extra_info("ssl_object"), pin)  # PinMismatch on mismatch
"""

from __future__ import annotations

import ssl
from typing import Any

from posassist.protocol import pins
from posassist.protocol.pins import PinMismatch, validate_pin

__all__ = ["PinMismatch", "check_pin", "client_ssl_context_for_pin", "validate_pin"]


def client_ssl_context_for_pin(pin: str) -> ssl.SSLContext:
    """A client context for a relay known only by its pin: TLS 1.2+, no CA or hostname check."""
    validate_pin(pin)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = False  # must go before CERT_NONE
    context.verify_mode = ssl.CERT_NONE
    return context


def check_pin(ssl_object: Any, pin: str) -> None:
    """Return if the peer of ``ssl_object`` (SSLObject or SSLSocket) has the pinned key."""
    der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    pins.check_pin(der or b"", validate_pin(pin))
