"""Enrol this PC with a relay using a one-time token (``posassist-agent enroll TOKEN``).

Makes the key pair here (the private key never leaves the PC), sends only the public key and the
token's secret, and keeps what the token pins: relay id, TLS pin, script repository root hash.
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from typing import TYPE_CHECKING, Any, Dict

from protocol import signing
from protocol.enrolment import EnrolmentInvite, http_base_url

from . import __version__
from .config import Identity, write_identity
from .errors import ConfigError, RelayRefusedError

if TYPE_CHECKING:
    from pathlib import Path


def _post_json(url: str, body: Dict[str, Any], timeout: float) -> Dict[str, Any]:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode("utf-8"),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            answer = json.loads(response.read(65536))
    except urllib.error.HTTPError as exc:
        try:
            detail = json.loads(exc.read(4096))
            code = str(detail.get("error", exc.code))
            message = str(detail.get("message", ""))
        except ValueError:
            code, message = str(exc.code), ""
        raise RelayRefusedError(f"{code}: {message}" if message else code) from None
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
    if invite.tls_pin is not None:
        # Pinned TLS for enrolment arrives with the relay's TLS support in the agent; refuse
        # rather than enrol over a connection whose relay we could not check.
        raise ConfigError("this agent cannot yet check a TLS pin; use a ws:// relay")
    key = signing.generate_private_key()
    raw_public = signing.public_key_to_raw(key.public_key())
    try:
        answer = _post_json(
            http_base_url(invite.relay_url) + "/v1/enrol",
            {
                "secret": invite.secret,
                "public_key": base64.b64encode(raw_public).decode("ascii"),
                "agent_version": "posassist-agent/" + __version__,
            },
            timeout,
        )
    except (urllib.error.URLError, OSError) as exc:
        raise ConfigError(f"cannot reach the relay at {invite.relay_url}: {exc}") from None
    device_id = answer.get("device_id")
    if answer.get("relay_id") != invite.relay_id or not isinstance(device_id, str):
        raise ConfigError("the relay that answered is not the one the token names")
    identity = Identity(device_id, invite.relay_url, key)
    write_identity(
        data_dir,
        identity,
        {"relay_id": invite.relay_id, "tls_pin": invite.tls_pin, "root_hash": invite.root_hash},
    )
    return identity


__all__ = ["enrol"]
