"""The agent's identity on disk: its Ed25519 key (never leaves the PC) and where its relay is.

Files in the data directory: ``agent.json`` (device id, relay URL), ``agent.key``, ``agent.pub``.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any, Dict, NamedTuple, Optional

from posassist.client.files import private_dir, write_private
from posassist.protocol import signing

from .errors import ConfigError

if TYPE_CHECKING:
    from pathlib import Path

    from posassist.client.signer import NativeSigner
    from posassist.protocol.signing import Ed25519PrivateKey

DEVICE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class Identity(NamedTuple):
    """Who this agent is and which relay it talks to."""

    device_id: str
    relay_url: str
    #: cryptography's key when made here; OpenSSL's (client/signer.py) when loaded to sign in
    key: Ed25519PrivateKey | NativeSigner
    #: The relay's TLS key pin from the enrolment token (required for wss://).
    tls_pin: Optional[str] = None


def create_identity(data_dir: Path, device_id: str, relay_url: str) -> Identity:
    """Make a new key pair and config in ``data_dir``; refuses to overwrite an existing key."""
    if not DEVICE_ID.match(device_id):
        raise ConfigError("device id: letters, digits, '.', '_' or '-', at most 64")
    if not relay_url.startswith(("ws://", "wss://")):
        raise ConfigError("relay URL must start with ws:// or wss://")
    private_dir(data_dir)
    key_path = data_dir / "agent.key"
    if key_path.exists():
        raise ConfigError(f"{key_path} exists already; this PC has an identity")
    identity = Identity(device_id, relay_url, signing.generate_private_key())
    write_identity(data_dir, identity)
    return identity


def write_identity(
    data_dir: Path, identity: Identity, extra: Optional[Dict[str, Any]] = None
) -> None:
    """Write key (0600, never over an existing one), public key and settings to ``data_dir``."""
    from posassist.client.signer import NativeSigner

    key = identity.key
    if isinstance(key, NativeSigner):  # a loaded key is never written again
        raise ConfigError("the identity's key is on disk already")
    # 0700 folder, 0600 files from the first byte: nothing sits readable on a shared till
    private_dir(data_dir)
    write_private(data_dir / "agent.key", signing.private_key_to_pem(key), exclusive=True)
    write_private(data_dir / "agent.pub", signing.public_key_to_pem(key.public_key()))
    config: Dict[str, Any] = {"device_id": identity.device_id, "relay_url": identity.relay_url}
    config.update(extra or {})
    write_private(data_dir / "agent.json", json.dumps(config, indent=2))


def load_identity(data_dir: Path) -> Identity:
    """Read the identity made by :func:`create_identity`; ConfigError says what is missing."""
    try:
        config = json.loads((data_dir / "agent.json").read_text(encoding="utf-8"))
        pem = (data_dir / "agent.key").read_bytes()
        # OpenSSL's key for the form this agent writes; any other, cryptography reads or refuses
        from posassist.client.signer import load_signing_key

        key = load_signing_key(pem)
        pin = config.get("tls_pin")
        return Identity(
            str(config["device_id"]), str(config["relay_url"]), key, str(pin) if pin else None
        )
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigError(f"no usable agent identity in {data_dir}: {exc}") from None
