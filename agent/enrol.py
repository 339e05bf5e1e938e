"""Enrol this PC with a relay using a one-time token (``posassist-agent enroll TOKEN``).

Makes the key pair here (the private key never leaves the PC), sends only the public key and the
token's secret, and keeps what the token pins: relay id, TLS pin, script repository root hash.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
from typing import TYPE_CHECKING, Any, Dict, Optional, Tuple

from posassist.client.tlspin import check_pin, client_ssl_context_for_pin
from posassist.protocol import signing
from posassist.protocol.enrolment import EnrolmentInvite, http_base_url

from . import __version__
from .config import Identity, write_identity
from .errors import ConfigError, RelayRefusedError

if TYPE_CHECKING:
    from pathlib import Path


#: The most bytes a root metadata file may have.
MAX_ROOT = 256 * 1024


def _http(
    method: str,
    base_url: str,
    path: str,
    body: Optional[bytes],
    timeout: float,
    pin: Optional[str],
    max_bytes: int = 65536,
) -> Tuple[int, bytes]:
    """One HTTP exchange; over HTTPS the relay's key is checked against ``pin`` first."""
    scheme, _, host_port = base_url.partition("://")
    host, _, port_text = host_port.partition(":")
    conn: http.client.HTTPConnection
    if scheme == "https":
        assert pin is not None  # EnrolmentInvite requires a pin for wss://
        conn = http.client.HTTPSConnection(
            host, int(port_text or 443), timeout=timeout, context=client_ssl_context_for_pin(pin)
        )
        conn.connect()
        check_pin(conn.sock, pin)  # before anything (the secret) leaves this PC
    else:
        conn = http.client.HTTPConnection(host, int(port_text or 80), timeout=timeout)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, response.read(max_bytes)
    finally:
        conn.close()


def _post_json(
    base_url: str, path: str, body: Dict[str, Any], timeout: float, pin: Optional[str]
) -> Dict[str, Any]:
    """POST JSON and return the JSON object answered; RelayRefusedError for a refusal."""
    status, raw = _http("POST", base_url, path, json.dumps(body).encode("utf-8"), timeout, pin)
    try:
        answer = json.loads(raw)
    except ValueError:
        raise ConfigError(f"the relay's answer was not JSON (HTTP {status})") from None
    if status != 200:
        detail = answer if isinstance(answer, dict) else {}
        code = str(detail.get("error", status))
        message = str(detail.get("message", ""))
        raise RelayRefusedError(f"{code}: {message}" if message else code)
    if not isinstance(answer, dict):
        raise ConfigError("the relay's answer was not a JSON object")
    return answer


def _fetch_root(base_url: str, root_hash: str, timeout: float, pin: Optional[str]) -> bytes:
    """The script repository's current root metadata, checked against the token's hash."""
    status, raw = _http(
        "GET", base_url, "/v1/scripts/metadata/root.json", None, timeout, pin, MAX_ROOT
    )
    if status != 200 or hashlib.sha256(raw).hexdigest() != root_hash:
        raise ConfigError("the relay's script repository root is not the one the token pins")
    return raw


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
        # The root first: a relay serving another repository never gets to consume the token.
        root = (
            _fetch_root(http_base_url(invite.relay_url), invite.root_hash, timeout, invite.tls_pin)
            if invite.root_hash
            else None
        )
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
    if root is not None:
        (data_dir / "scripts").mkdir(parents=True, exist_ok=True)
        (data_dir / "scripts" / "root.json").write_bytes(root)
    write_identity(
        data_dir,
        identity,
        {"relay_id": invite.relay_id, "tls_pin": invite.tls_pin, "root_hash": invite.root_hash},
    )
    return identity


__all__ = ["enrol"]
