"""Where the relay looks up an agent's public key by device id.

Until enrolment lands (issue 4) keys are PEM files in ``DATA/devices/<device_id>.pub``.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Protocol

from protocol import signing
from protocol.errors import SignatureError

if TYPE_CHECKING:
    from pathlib import Path

    from protocol.signing import Ed25519PublicKey

DEVICE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class DeviceKeys(Protocol):
    """Look up the public key bound to a device id; None if there is none."""

    async def public_key(self, device_id: str) -> Ed25519PublicKey | None: ...


class DirectoryDeviceKeys:
    """Device keys as PEM files in one directory; a file name is a device id."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    async def public_key(self, device_id: str) -> Ed25519PublicKey | None:
        if not DEVICE_ID.fullmatch(device_id):
            return None  # never build a path from an id we did not validate
        path = self.directory / f"{device_id}.pub"
        try:
            return signing.public_key_from_pem(path.read_bytes())
        except (OSError, SignatureError):
            return None

    def add(self, device_id: str, key: Ed25519PublicKey) -> Path:
        """Bind ``key`` to ``device_id`` (what the demo does in place of enrolment)."""
        if not DEVICE_ID.fullmatch(device_id):
            raise ValueError(f"bad device id {device_id!r}")
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"{device_id}.pub"
        path.write_bytes(signing.public_key_to_pem(key))
        return path
