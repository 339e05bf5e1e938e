"""Relay configuration: one frozen object built from the command line, passed to create_app.

No globals: everything the relay needs at run time hangs off this object and the app.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from posassist.protocol.codec import DEFAULT_LIMITS, Limits

if TYPE_CHECKING:
    from pathlib import Path


@dataclass(frozen=True, slots=True, kw_only=True)
class RelayConfig:
    """What one relay process needs; ``data_dir`` holds its identity and (by default) database."""

    data_dir: Path
    relay_id: str
    database_url: str = ""
    #: PostgreSQL schema to use (tests and shared databases); None means the default.
    database_schema: str | None = None
    #: SQLite durability: "normal" (commits survive a killed process; disk within ~1 s) or
    #: "full" (every commit fsynced); see relay.storage.engine.
    database_sync: str = "normal"
    host: str = "127.0.0.1"
    port: int = 8765
    #: Where ``serve`` listens for /metrics: never on host:port (the agents' port) but on its own
    #: listener, by default 127.0.0.1 on a free port named in DATA/metrics.url.
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 0
    #: The ws(s):// URL agents are told to use (enrolment tokens); defaults to host:port.
    public_url: str = ""
    tls_cert: Path | None = None
    tls_key: Path | None = None
    #: Lowercase hex SHA-256 of the TLS certificate's public key, put in enrolment tokens.
    tls_pin: str | None = None
    #: SHA-256 of the script repository's current root metadata, put in enrolment tokens.
    root_hash: str | None = None
    heartbeat_interval: float = 20.0
    handshake_timeout: float = 10.0
    request_timeout: float = 60.0
    #: The longest consent wait (stated by the agent) that holds a script request open.
    max_consent_timeout: float = 900.0
    #: The longest run timeout (stated by the agent) that holds a script request open.
    max_run_timeout: float = 3600.0
    shutdown_grace: float = 5.0
    #: How long to wait for a peer's close frame; a peer that stopped reading won't send one.
    close_timeout: float = 2.0
    token_ttl: float = 8 * 3600.0
    #: Failed sign-ins in a row, per (address, username), before tries from there wait.
    login_max_failures: int = 5
    #: The first wait, doubled at each further failure up to ``login_lockout`` (relay/lockout.py).
    login_backoff: float = 1.0
    #: The longest wait between tries after failed sign-ins (a back-off, never a hard lock).
    login_lockout: float = 15 * 60.0
    login_rate: float = 1.0  # sign-in attempts per second per address, after the burst
    login_burst: int = 10
    console_rate: float = 20.0  # routed requests per second per user, after the burst
    console_burst: int = 50
    console_max_in_flight: int = 64
    #: Frames queued for one peer before it counts as too slow and is disconnected (4008).
    max_outbox: int = 1024
    #: Limits before sign-in (relay/limits.py, docs/relay.md#limits-before-sign-in): seconds a
    #: new connection has to send a complete request head, to finish a plain HTTP request in
    #: the relay (its body included), and to start the next one on a kept-alive connection.
    header_timeout: float = 10.0
    http_request_timeout: float = 30.0
    idle_timeout: float = 15.0
    #: Connections not signed in, in total and from one address (0: no cap); beyond, a new
    #: connection is closed at once.
    max_unauthenticated: int = 1024
    max_unauthenticated_per_address: int = 256
    #: Websocket sign-ins that fail (bad signature, unknown device, bad token…) per address:
    #: a budget of ``handshake_failure_burst``, refilled at ``handshake_failure_rate`` per
    #: second; an address that spent it gets 429 before the upgrade (relay/limits.py).
    handshake_failure_rate: float = 0.05
    handshake_failure_burst: int = 10
    #: Websocket sign-ins worked on at once; past it a new one is answered 503 with a
    #: Retry-After that spreads the retries (load shedding, relay/limits.py HandshakeGate).
    #: 0 (the default): no shedding; measured here, the 503s cost the relay more than the
    #: sign-ins they put off (docs/notes/16b-status.md), the caps above bound a storm already.
    max_handshakes_in_flight: int = 0
    #: Bytes queued for one peer before it counts as too slow and is disconnected (4008).
    max_outbox_bytes: int = 16 * 1024 * 1024
    enrol_rate: float = 0.2  # enrolment attempts per second per address, after the burst
    enrol_burst: int = 10
    #: Refusals before sign-in: the first per address and action in a window is audited in full,
    #: the rest as one summary record with a count when the window ends (relay/refusals.py).
    refusal_window: float = 60.0
    max_refusal_addresses: int = 1000
    #: Replacements of one device's connection by another (4002) in ``flap_window`` seconds
    #: beyond which it is flapping: two tills with one identity (relay/flapping.py).
    flap_window: float = 60.0
    flap_threshold: int = 5
    sweep_interval: float = 0.1
    presence_interval: float = 1.0
    #: Seconds between signed audit checkpoints (docs/relay.md#audit-checkpoints).
    audit_checkpoint_interval: float = 60.0
    #: The checkpoint signing key; None: ``audit-checkpoint.key`` in the data directory.
    checkpoint_key: Path | None = None
    #: The append-only checkpoint file; None: ``audit-checkpoints.jsonl`` in the data directory.
    checkpoint_file: Path | None = None
    #: Alert webhooks (relay/webhooks.py): seconds a receiver has to answer, and the factor
    #: on the retry schedule (1.0: 1 s, 5 s, 30 s, 2 min, 10 min; tests shrink it).
    webhook_timeout: float = 10.0
    webhook_retry_scale: float = 1.0
    #: Let webhooks reach loopback, private and link-local addresses (a receiver on the relay's
    #: own network, tests); off by default: an organisation's admin must not probe the inside.
    webhook_allow_private: bool = False
    limits: Limits = field(default=DEFAULT_LIMITS)

    @property
    def scripts_dir(self) -> Path:
        """Where ``posassist-scripts publish --to DATA`` puts the signed script repository."""
        return self.data_dir / "scripts"

    @property
    def checkpoint_key_path(self) -> Path:
        """Where the audit checkpoint key is (never in the database)."""
        return self.checkpoint_key or self.data_dir / "audit-checkpoint.key"

    @property
    def checkpoint_file_path(self) -> Path:
        """Where signed audit checkpoints are appended (never in the database)."""
        return self.checkpoint_file or self.data_dir / "audit-checkpoints.jsonl"

    @property
    def database(self) -> str:
        """The database URL: the configured one, or SQLite in the data directory."""
        return self.database_url or f"sqlite:///{self.data_dir / 'relay.db'}"

    def with_port(self, port: int) -> RelayConfig:
        """This config once the real port is known (``--port 0``)."""
        scheme = "wss" if self.tls_cert else "ws"
        host = f"[{self.host}]" if ":" in self.host else self.host  # an IPv6 address (RFC 3986)
        public = self.public_url or f"{scheme}://{host}:{port}"
        return replace(self, port=port, public_url=public)

    @classmethod
    def load(cls, data_dir: Path, **overrides: object) -> RelayConfig:
        """Read (or create on first use) the relay identity in ``data_dir/relay.json``.

        A data directory made here is 0700 and the files in it 0600 (the umask can only take
        more away); an existing directory keeps the mode it has.
        """
        data_dir.parent.mkdir(parents=True, exist_ok=True)
        data_dir.mkdir(mode=0o700, exist_ok=True)
        identity = data_dir / "relay.json"
        if identity.exists():
            relay_id = json.loads(identity.read_text(encoding="utf-8"))["relay_id"]
        else:
            relay_id = f"relay-{secrets.token_hex(4)}"
            fd = os.open(identity, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(json.dumps({"relay_id": relay_id}))
        return cls(data_dir=data_dir, relay_id=relay_id, **overrides)  # type: ignore[arg-type]
