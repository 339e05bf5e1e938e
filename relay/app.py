"""The relay as an aiohttp application, built by create_app(config) with no globals.

Endpoints: ``/v1/agent`` (websocket, docs/protocol.md#handshake) and ``/healthz``.
"""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from aiohttp import web

from protocol import (
    AuthenticationError,
    AuthResponse,
    Heartbeat,
    Hello,
    PosAssistError,
    Role,
    Session,
    signing,
)
from protocol.errors import SignatureError, UnexpectedMessage

from . import __version__
from .connection import ConnectionClosedError, WebSocketSession
from .devices import DeviceKeys, DirectoryDeviceKeys

if TYPE_CHECKING:
    from .config import RelayConfig

log = logging.getLogger("posassist.relay")
SOFTWARE = f"posassist-relay/{__version__}"


@dataclass(slots=True)
class AgentPresence:
    """What the relay knows of one connected agent."""

    device_id: str
    peer: WebSocketSession
    software: str
    connected_at: float
    last_seen: float


@dataclass(slots=True)
class RelayState:
    """Everything the running relay holds in memory; one per application."""

    config: RelayConfig
    device_keys: DeviceKeys
    agents: dict[str, AgentPresence] = field(default_factory=dict)
    sockets: set[web.WebSocketResponse] = field(default_factory=set)


STATE = web.AppKey("state", RelayState)


def create_app(config: RelayConfig, device_keys: DeviceKeys | None = None) -> web.Application:
    """A relay application for ``config``; ``device_keys`` defaults to DATA/devices/*.pub."""
    app = web.Application(client_max_size=64 * 1024)
    keys = device_keys or DirectoryDeviceKeys(config.data_dir / "devices")
    app[STATE] = RelayState(config=config, device_keys=keys)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/v1/agent", agent_endpoint)
    app.on_shutdown.append(_close_sockets)
    return app


async def healthz(request: web.Request) -> web.Response:
    state = request.app[STATE]
    return web.json_response(
        {"status": "ok", "relay_id": state.config.relay_id, "agents": len(state.agents)}
    )


async def _close_sockets(app: web.Application) -> None:
    # Graceful shutdown: tell every peer we are going away (1001) so agents reconnect elsewhere.
    for ws in list(app[STATE].sockets):
        await ws.close(code=1001, message=b"relay shutting down")


async def agent_endpoint(request: web.Request) -> web.WebSocketResponse:
    state = request.app[STATE]
    config = state.config
    ws = web.WebSocketResponse(max_msg_size=config.limits.max_frame, compress=False)
    await ws.prepare(request)
    peer = WebSocketSession(ws, Session(Role.RELAY_FOR_AGENT), str(request.remote))
    state.sockets.add(ws)
    presence: AgentPresence | None = None
    try:
        presence = await _authenticate_agent(peer, state)
        await _serve_agent(presence, state)
    except PosAssistError as exc:
        await peer.close_for(exc)
    except (ConnectionClosedError, TimeoutError, ConnectionResetError) as exc:
        log.info("agent connection from %s ended: %s", peer.peer, type(exc).__name__)
    finally:
        state.sockets.discard(ws)
        if presence is not None and state.agents.get(presence.device_id) is presence:
            del state.agents[presence.device_id]
            log.info("agent %s disconnected", presence.device_id)
        if not ws.closed:
            await ws.close()
    return ws


async def _authenticate_agent(peer: WebSocketSession, state: RelayState) -> AgentPresence:
    """Hello, Welcome, challenge, signed response (docs/protocol.md#agent-authentication)."""
    config = state.config
    session = peer.session
    hello = await peer.wait_one(config.handshake_timeout)
    if not isinstance(hello, Hello):  # pragma: no cover - the session only lets Hello through
        raise UnexpectedMessage(hello.TAG)
    nonce = secrets.token_bytes(32)
    session.send_welcome(config.relay_id, SOFTWARE)
    session.send_challenge(nonce)
    await peer.flush()
    response = await peer.wait_one(config.handshake_timeout)
    if not isinstance(response, AuthResponse):  # pragma: no cover - as above
        raise UnexpectedMessage(response.TAG)
    assert session.version is not None
    key = await state.device_keys.public_key(response.device_id)
    try:
        if key is None:
            raise AuthenticationError(f"unknown device {response.device_id!r}")
        payload = signing.auth_payload(config.relay_id, response.device_id, nonce, session.version)
        signing.verify(key, response.signature, payload)
    except (AuthenticationError, SignatureError) as exc:
        code = "unknown_device" if key is None else "bad_signature"
        log.warning("refused agent %r from %s: %s", response.device_id, peer.peer, code)
        session.send_refused(code)
        await peer.flush()
        raise AuthenticationError(str(exc)) from None
    now = time.time()
    presence = AgentPresence(response.device_id, peer, hello.software, now, now)
    previous = state.agents.get(presence.device_id)
    state.agents[presence.device_id] = presence
    if previous is not None:
        # A second connection for the same device replaces the first, cleanly.
        await previous.peer.ws.close(code=4002, message=b"replaced by a newer connection")
    session.send_accepted(presence.device_id, config.heartbeat_interval)
    await peer.flush()
    fp = signing.fingerprint(key)
    log.info(
        "agent %s connected from %s (%s, protocol v%d, key %s)",
        presence.device_id,
        peer.peer,
        hello.software,
        session.version,
        fp[:27],
    )
    return presence


async def _serve_agent(presence: AgentPresence, state: RelayState) -> None:
    """Keep an authenticated agent: answer heartbeats; silence for 3 intervals ends it."""
    peer = presence.peer
    idle_timeout = 3 * state.config.heartbeat_interval
    while True:
        events = await peer.wait_events(idle_timeout)
        presence.last_seen = time.time()
        for event in events:
            if isinstance(event, Heartbeat):
                peer.session.send_heartbeat_ack(event, time.time())
        await peer.flush()
