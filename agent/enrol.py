"""Enrol this PC with a relay using a one-time token (``posassist-agent enroll TOKEN``).

Makes the key pair here (the private key never leaves the PC), sends only the public key and the
token's secret, and keeps what the token pins: relay id, TLS pin, script repository root hash.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import TYPE_CHECKING, Any, Dict, Optional

from posassist.client import http
from posassist.protocol import signing
from posassist.protocol.enrolment import EnrolmentInvite

from . import __version__
from .config import Identity, write_identity
from .errors import ConfigError, RelayRefusedError

if TYPE_CHECKING:
    from pathlib import Path


#: The most bytes a root metadata file may have.
MAX_ROOT = 256 * 1024
#: The most bytes the enrolment answer may have.
MAX_ANSWER = 64 * 1024


def _post_json(
    base_url: str, path: str, body: Dict[str, Any], pin: Optional[str]
) -> Dict[str, Any]:
    """POST JSON and return the JSON object answered; RelayRefusedError for a refusal."""
    answer = http.request(
        "POST",
        base_url + path,
        body=json.dumps(body).encode("utf-8"),
        headers={"Content-Type": "application/json"},
        pin=pin,
        max_bytes=MAX_ANSWER,
    )
    try:
        answer.raise_for_status()
    except http.HttpStatusError as exc:
        raise RelayRefusedError(f"{exc.error}: {exc.message}" if exc.error else str(exc)) from None
    detail = answer.json()
    if not isinstance(detail, dict):
        raise ConfigError("the relay's answer was not a JSON object")
    return detail


def _fetch_root(base_url: str, root_hash: str, pin: Optional[str]) -> bytes:
    """The script repository's current root metadata, checked against the token's hash."""
    with http.stream(
        "GET", base_url + "/v1/scripts/metadata/root.json", pin=pin, max_bytes=MAX_ROOT
    ) as answer:
        raw = b"".join(answer.iter_bytes()) if answer.status == 200 else b""
    if hashlib.sha256(raw).hexdigest() != root_hash:
        raise ConfigError("the relay's script repository root is not the one the token pins")
    return raw


def enrol(token_text: str, data_dir: Path) -> Identity:
    """Enrol with the relay the token names; write the identity to ``data_dir``.

    Raises InvalidEnrolmentToken for damaged text, RelayRefusedError when the relay says no (used,
    expired, revoked, another relay's token), ConfigError when this PC already has an identity,
    and client/http.py's errors (PinMismatch, RelayUnreachable…) when the relay can't be reached.
    """
    invite = EnrolmentInvite.decode(token_text)
    if (data_dir / "agent.key").exists():
        raise ConfigError(f"{data_dir / 'agent.key'} exists already; this PC has an identity")
    key = signing.generate_private_key()
    raw_public = signing.public_key_to_raw(key.public_key())
    base_url = http.http_url(invite.relay_url)
    # The root first: a relay serving another repository never gets to consume the token.
    root = _fetch_root(base_url, invite.root_hash, invite.tls_pin) if invite.root_hash else None
    answer = _post_json(
        base_url,
        "/v1/enrol",
        {
            "secret": invite.secret,
            "public_key": base64.b64encode(raw_public).decode("ascii"),
            "agent_version": "posassist-agent/" + __version__,
        },
        invite.tls_pin,
    )
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
