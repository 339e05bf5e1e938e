"""A real relay (create_app on aiohttp's TestServer, SQLite in tmp_path) and real peers for it.

Agents and consoles here speak the protocol through protocol.Session over a real websocket.
"""

from __future__ import annotations

import asyncio
import base64
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import TestServer
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from posassist.protocol import SUPPORTED_VERSIONS, Role, Session, SessionState, signing
from posassist.protocol import messages as m
from posassist.protocol.enrolment import EnrolmentInvite
from posassist.relay.app import create_app
from posassist.relay.config import RelayConfig
from posassist.relay.metrics import METRICS
from posassist.relay.passwords import hash_password
from posassist.relay.state import STATE, RelayState
from posassist.relay.storage import Role as UserRole
from posassist.relay.storage import Scope, ScopeKind

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

PASSWORD = "correct horse battery"
_HASH = hash_password(PASSWORD)


class Clock:
    """A settable clock for the relay, so expiry and lockout are tested without sleeping."""

    def __init__(self) -> None:
        import time

        self.offset = 0.0
        self._time = time.time

    def __call__(self) -> float:
        return self._time() + self.offset

    def stop(self) -> None:
        """From now on the relay's time moves only when the test moves it (``offset``): a test
        that checks durations to the second does not depend on how busy the machine is."""
        now = self._time()
        self._time = lambda: now


@dataclass
class Relay:
    server: TestServer
    clock: Clock
    org: str = ""
    merchant: str = ""
    store: str = ""
    other_store: str = ""
    tokens: dict[str, str] = field(default_factory=dict)

    @property
    def state(self) -> RelayState:
        return self.server.app[STATE]

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.server.port}"

    async def post(
        self, path: str, body: object, token: str | None = None
    ) -> tuple[int, dict[str, object]]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with (
            ClientSession() as http,
            http.post(self.http + path, json=body, headers=headers) as response,
        ):
            return response.status, await response.json()

    async def get(self, path: str, token: str | None = None) -> tuple[int, dict[str, object]]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with ClientSession() as http, http.get(self.http + path, headers=headers) as r:
            return r.status, await r.json()

    async def invite(self, store: str | None = None, ttl: float = 3600) -> str:
        status, body = await self.post(
            "/v1/enrolments", {"store_id": store or self.store, "ttl": ttl}, self.tokens["admin"]
        )
        assert status == 201, body
        return str(body["token"])

    async def enrol(self, token_text: str | None = None) -> tuple[str, signing.Ed25519PrivateKey]:
        invite = EnrolmentInvite.decode(token_text or await self.invite())
        key = signing.generate_private_key()
        raw = signing.public_key_to_raw(key.public_key())
        status, body = await self.post(
            "/v1/enrol",
            {"secret": invite.secret, "public_key": base64.b64encode(raw).decode()},
        )
        assert status == 200, body
        return str(body["device_id"]), key

    def metrics_text(self) -> str:
        """What the relay's /metrics listener would answer (serve() gives it its own port; the
        in-process server has none, and its public port answers 404 for /metrics)."""
        body, _ = self.server.app[METRICS].exposition()
        return body.decode()

    async def audit_actions(self) -> list[tuple[str, str, str]]:
        return [(r.action, str(r.outcome), r.target) async for r in self.state.storage.records()]


async def start_relay(tmp_path: Path, **overrides: object) -> Relay:
    clock = Clock()
    # Test peers send no heartbeats of their own: a long interval keeps them through slow steps
    # (a CLI subprocess on a busy machine); tests of silence set a short one.
    settings: dict[str, object] = {"heartbeat_interval": 30.0, "handshake_timeout": 3.0}
    settings.update(overrides)
    config = RelayConfig.load(tmp_path / "relay", **settings)
    server = TestServer(create_app(config, clock=clock), host="127.0.0.1")
    await server.start_server()
    relay = Relay(server, clock)
    state = relay.state
    state.config = config.with_port(server.port)
    storage = state.storage
    now = clock()
    relay.org = (await storage.create_organisation("Acme POS Service", now=now)).id
    relay.merchant = (await storage.create_merchant(relay.org, "Noodle House", now=now)).id
    relay.store = (await storage.create_store(relay.merchant, "Main St", now=now)).id
    relay.other_store = (await storage.create_store(relay.merchant, "Harbour", now=now)).id
    users = {
        "admin": (UserRole.ADMIN, Scope.root()),
        "tech": (UserRole.TECHNICIAN, Scope(ScopeKind.STORE, relay.store)),
        "viewer": (UserRole.VIEWER, Scope(ScopeKind.STORE, relay.store)),
    }
    for name, (role, scope) in users.items():
        user = await storage.create_user(name, _HASH, role, scope, now=now)
        if name == "admin":  # signs in as a person does (a login record in the chain)
            status, body = await relay.post("/v1/login", {"username": name, "password": PASSWORD})
            assert status == 200, body
            relay.tokens[name] = str(body["token"])
        else:  # the others' tokens as a login issues them, without two more scrypt runs
            # (~0.1 s of CPU each, at every relay the suite starts: issue 16, make test's time)
            relay.tokens[name] = await storage.issue_token(user.id, now=now, ttl=config.token_ttl)
    return relay


async def wait_until(condition: Callable[[], bool], timeout: float = 10) -> None:
    """Poll ``condition`` (plain state, no event to await) until true, or fail at ``timeout``."""
    async with asyncio.timeout(timeout):
        while not condition():  # noqa: ASYNC110 - polls relay state that has no event
            await asyncio.sleep(0.02)


async def recv(
    ws: ClientConnection, session: Session, timeout: float = 15, *, policy: bool = False
) -> list[m.Message]:
    """Frames until the session yields at least one message. The ``policy.updated`` a v5 agent
    is sent on sign-in and on changes is left out unless ``policy`` (tests/relay/test_policies.py
    reads it); other tests see what they saw before it existed."""
    async with asyncio.timeout(timeout):
        while True:
            frame = await ws.recv()
            assert isinstance(frame, bytes)
            session.receive_data(frame)
            events = session.events_received()
            if not policy:
                events = [e for e in events if not isinstance(e, m.PolicyUpdated)]
            if events:
                return events


async def send(ws: ClientConnection, session: Session) -> None:
    for frame in session.data_to_send():
        await ws.send(frame)


async def drain(ws: ClientConnection) -> None:
    while True:
        await ws.recv()


async def close_code(ws: ClientConnection, timeout: float = 15) -> int:
    """Read until the relay closes the connection; its close code."""
    async with asyncio.timeout(timeout):
        with pytest.raises(ConnectionClosed) as info:
            await drain(ws)
    assert info.value.rcvd is not None
    return info.value.rcvd.code


async def agent_handshake(
    ws: ClientConnection,
    device_id: str,
    key: signing.Ed25519PrivateKey,
    sign: Callable[[bytes], bytes] | None = None,
    versions: tuple[int, ...] = SUPPORTED_VERSIONS,
    timeout: float = 15,
) -> tuple[Session, m.Message]:
    session = Session(Role.AGENT, versions=versions)
    session.send_hello("test-agent")
    await send(ws, session)
    events: list[m.Message] = []
    while session.state is not SessionState.CHALLENGED:
        events += await recv(ws, session, timeout)
    welcome, challenge = events
    assert isinstance(welcome, m.Welcome)
    assert isinstance(challenge, m.AuthChallenge)
    payload = signing.auth_payload(welcome.relay_id, device_id, challenge.nonce, welcome.version)
    session.send_auth_response(device_id, sign(payload) if sign else signing.sign(key, payload))
    await send(ws, session)
    (answer,) = await recv(ws, session, timeout)
    return session, answer


async def console_handshake(ws: ClientConnection, token: str) -> tuple[Session, m.Message]:
    session = Session(Role.CONSOLE)
    session.send_hello("test-console")
    await send(ws, session)
    await recv(ws, session)
    session.send_token(token)
    await send(ws, session)
    (answer,) = await recv(ws, session)
    return session, answer


class Agent:
    """An enrolled, connected agent played by the test."""

    def __init__(
        self,
        relay: Relay,
        device_id: str,
        key: signing.Ed25519PrivateKey,
        versions: tuple[int, ...] = SUPPORTED_VERSIONS,
    ) -> None:
        self.relay, self.device_id, self.key = relay, device_id, key
        self.versions = versions
        self.ws: ClientConnection | None = None
        self.session: Session | None = None

    async def __aenter__(self) -> Agent:
        self.ws = await connect(self.relay.ws + "/v1/agent", close_timeout=1)
        self.session, answer = await agent_handshake(
            self.ws, self.device_id, self.key, versions=self.versions
        )
        assert isinstance(answer, m.AuthAccepted), answer
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.ws is not None
        await self.ws.close()

    async def next(self, timeout: float = 15, *, policy: bool = False) -> list[m.Message]:
        assert self.ws is not None
        assert self.session is not None
        return await recv(self.ws, self.session, timeout, policy=policy)

    async def reply(self, msg: m.Message) -> None:
        assert self.ws is not None
        assert self.session is not None
        self.session.send(msg)
        await send(self.ws, self.session)


class Console:
    """A signed-in technician console played by the test."""

    def __init__(self, relay: Relay, user: str = "tech") -> None:
        self.relay, self.user = relay, user
        self.ws: ClientConnection | None = None
        self.session: Session | None = None

    async def __aenter__(self) -> Console:
        self.ws = await connect(self.relay.ws + "/v1/console", close_timeout=1)
        self.session, answer = await console_handshake(self.ws, self.relay.tokens[self.user])
        assert isinstance(answer, m.AuthAccepted), answer
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.ws is not None
        await self.ws.close()

    async def request(self, msg: m.Message) -> None:
        assert self.ws is not None
        assert self.session is not None
        self.session.send(msg)
        await send(self.ws, self.session)

    async def next(self, timeout: float = 15) -> list[m.Message]:
        assert self.ws is not None
        assert self.session is not None
        return await recv(self.ws, self.session, timeout)
