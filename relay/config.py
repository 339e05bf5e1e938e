"""Relay configuration: one frozen object built from the command line, passed to create_app.

No globals: everything the relay needs at run time hangs off this object and the app.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from protocol.codec import DEFAULT_LIMITS, Limits

if TYPE_CHECKING:
    from pathlib import Path


@dataclass(frozen=True, slots=True, kw_only=True)
class RelayConfig:
    """What one relay process needs; ``data_dir`` holds its identity and device keys."""

    data_dir: Path
    relay_id: str
    host: str = "127.0.0.1"
    port: int = 8765
    heartbeat_interval: float = 20.0
    handshake_timeout: float = 10.0
    shutdown_grace: float = 5.0
    limits: Limits = field(default=DEFAULT_LIMITS)

    @classmethod
    def load(cls, data_dir: Path, **overrides: object) -> RelayConfig:
        """Read (or create on first use) the relay identity in ``data_dir/relay.json``."""
        data_dir.mkdir(parents=True, exist_ok=True)
        identity = data_dir / "relay.json"
        if identity.exists():
            relay_id = json.loads(identity.read_text(encoding="utf-8"))["relay_id"]
        else:
            relay_id = f"relay-{secrets.token_hex(4)}"
            identity.write_text(json.dumps({"relay_id": relay_id}), encoding="utf-8")
        return cls(data_dir=data_dir, relay_id=relay_id, **overrides)  # type: ignore[arg-type]
