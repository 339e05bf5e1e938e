"""Enrol this PC with a relay using a one-time token (``posassist-agent enroll TOKEN``).

Makes the key pair here (the private key never leaves the PC), sends only the public key and the
token's secret, and keeps what the token pins: relay id, TLS pin, script repository root hash.
"""

from __future__ import annotations

import base64
import http.client
import json
from typing import TYPE_CHECKING, Any, Dict, Optional

from protocol import signing
from protocol.enrolment import EnrolmentInvite, http_base_url

from . import __version__
from .config import Identity, write_identity
from .errors import ConfigError, RelayRefusedError
from .tlspin import check_pin, client_ssl_context_for_pin

if TYPE_CHECKING:
    from pathlib import Path


def _post_json(
    base_url: str, path: str, body: Dict[str, Any], timeout: float, pin: Optional[str]
) -> Dict[str, Any]:
    """POST JSON; over HTTPS the relay's key is checked against ``pin`` before a byte is sent."""
    scheme, _, host_port = base_url.partition("://")
    host, _, port_text = host_port.partition(":")
    conn: http.client.HTTPConnection
    if scheme == "https":
        assert pin is not None  # EnrolmentInvite requires a pin for wss://
        conn = http.client.HTTPSConnection(
            host, int(port_text or 443), timeout=timeout, context=client_ssl_context_for_pin(pin)
        )
        conn.connect()
        check_pin(conn.sock, pin)  # before the secret leaves this PC
    else:
        conn = http.client.HTTPConnection(host, int(port_text or 80), timeout=timeout)
    try:
        conn.request(
            "POST",
            path,
            body=json.dumps(body).encode("utf-8"),
            headers={"Content-Type": "application/json"},
        )
        response = conn.getresponse()
        raw = response.read(65536)
    finally:
        conn.close()
    try:
        answer = json.loads(raw)
    except ValueError:
        raise ConfigError(f"the relay's answer was not JSON (HTTP {response.status})") from None
    if response.status != 200:
        detail = answer if isinstance(answer, dict) else {}
        code = str(detail.get("error", response.status))
        message = str(detail.get("message", ""))
        raise RelayRefusedError(f"{code}: {message}" if message else code)
    if not isinstance(answer, dict):
        raise ConfigError("the relay's answer was not a JSON object")
    return answer


def enrol(token_text: str, data_dir: Path, *, timeout: float = 15.0) -> Identity:
    """Enrol with the relay the token names; write the identity to ``data_dir``.

    Raises InvalidEnrolmentToken for damaged text, RelayRefusedError when the relay says no (used,
    expired, revoked, another relay's token), ConfigError when this PC already has an identity.
    """
    invite = EnrolmentInvite.decode(token_text)
    if (data_dir / "agent.key").exists():
        raise ConfigError(f"{data_dir / 'agent.key'} exists already; this PC has an identity")
    key = signing.generate_private_key()
    raw_public = signing.public_key_to_raw(key.public_key())
    try:
        answer = _post_json(
            http_base_url(invite.relay_url),
            "/v1/enrol",
            {
                "secret": invite.secret,
                "public_key": base64.b64encode(raw_public).decode("ascii"),
                "agent_version": "posassist-agent/" + __version__,
            },
            timeout,
            invite.tls_pin,
        )
    except (http.client.HTTPException, OSError) as exc:
        raise ConfigError(f"cannot reach the relay at {invite.relay_url}: {exc}") from None
    device_id = answer.get("device_id")
    if answer.get("relay_id") != invite.relay_id or not isinstance(device_id, str):
        raise ConfigError("the relay that answered is not the one the token names")
    identity = Identity(device_id, invite.relay_url, key, invite.tls_pin)
    write_identity(
        data_dir,
        identity,
        {"relay_id": invite.relay_id, "tls_pin": invite.tls_pin, "root_hash": invite.root_hash},
    )
    return identity


__all__ = ["enrol"]
