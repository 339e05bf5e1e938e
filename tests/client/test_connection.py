"""The one client driver against a real relay on 127.0.0.1: liveness both ways.

A console waiting far longer than the relay's silence deadline is kept (it heartbeats; pings
alone count too), and an agent behind a proxy that black-holes the relay notices within two
heartbeat intervals and reconnects.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from posassist.agent.backoff import backoff
from posassist.agent.config import Identity
from posassist.agent.run import run_agent
from posassist.client.connection import open_connection
from posassist.console.connection import ConsoleConnection
from posassist.protocol import PeerSilentError, Role, Session, signing
from posassist.protocol import messages as m
from posassist.protocol.session import SILENCE_FACTOR
from posassist.relay.storage import JobStatus
from tests.relay.harness import Relay, close_code, console_handshake, start_relay, wait_until

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator
    from pathlib import Path

#: The smallest heartbeat interval auth.accepted allows (docs/protocol.md#messages).
HEARTBEAT = 1.0


@pytest.fixture
async def relay(tmp_path: Path) -> AsyncIterator[Relay]:
    relay = await start_relay(tmp_path, heartbeat_interval=HEARTBEAT)
    yield relay
    await relay.server.close()


def _signer(device_id: str, key: signing.Ed25519PrivateKey) -> object:
    welcome: list[m.Welcome] = []

    def authenticate(session: Session, msg: m.Message) -> None:
        if isinstance(msg, m.Welcome):
            welcome.append(msg)
        elif isinstance(msg, m.AuthChallenge):
            payload = signing.auth_payload(
                welcome[0].relay_id, device_id, msg.nonce, welcome[0].version
            )
            session.send_auth_response(device_id, signing.sign(key, payload))

    return authenticate


async def _next_request(requests: asyncio.Queue[m.Message]) -> m.Message:
    """The next message the relay forwards to the agent, past the policy it pushes on connect
    (issue 13: ``policy.updated`` may arrive before or after a console's first request)."""
    while True:  # bounded: each get waits at most 5 s; the relay pushes one policy per connection
        msg = await asyncio.wait_for(requests.get(), 5)
        if not isinstance(msg, m.PolicyUpdated):
            return msg


async def test_console_waiting_ten_heartbeat_intervals_is_kept_and_its_request_completes(
    relay: Relay,
) -> None:
    device_id, key = await relay.enrol()
    requests: asyncio.Queue[m.Message] = asyncio.Queue(4)
    async with open_connection(
        relay.ws + "/v1/agent",
        Role.AGENT,
        "test-agent",
        _signer(device_id, key),  # type: ignore[arg-type]
        on_message=requests.put_nowait,
    ) as agent:
        async with ConsoleConnection.open(relay.ws, relay.tokens["tech"]) as console:
            request = m.DiagnosticsRequest(
                id=console.session.next_id(), device_id=device_id, timeout=60.0
            )
            replies = console.request(request, timeout=60.0)
            first = asyncio.ensure_future(replies.__anext__())
            asked = await _next_request(requests)
            assert isinstance(asked, m.DiagnosticsRequest)
            started = time.monotonic()
            # The agent answers only after 10 intervals: far past the relay's silence deadline
            # (SILENCE_FACTOR intervals) for a console that sent nothing of its own.
            await asyncio.sleep(10 * HEARTBEAT)
            assert not first.done()
            assert relay.state.consoles == 1
            await agent.send(
                m.DiagnosticsReport(
                    id=asked.id, device_id=device_id, collected_at=time.time(), sections={}
                )
            )
            report = await asyncio.wait_for(first, 5)
            assert isinstance(report, m.DiagnosticsReport)
            assert report.id == request.id
            assert time.monotonic() - started >= 10 * HEARTBEAT
            await replies.aclose()
    records = [r async for r in relay.state.storage.records()]
    (finished,) = [r for r in records if r.action == "diag.request.finished"]
    assert finished.outcome == "ok"
    job = await relay.state.storage.get_job(str(finished.detail["job"]))
    assert job.status is JobStatus.SUCCEEDED


async def test_websocket_pings_alone_keep_a_console_connected(relay: Relay) -> None:
    # Nothing of its own but the websocket library's pings, every 0.3 s.
    async with connect(
        relay.ws + "/v1/console", ping_interval=0.3, ping_timeout=None, close_timeout=1
    ) as ws:
        _session, answer = await console_handshake(ws, relay.tokens["tech"])
        assert isinstance(answer, m.AuthAccepted)
        await wait_until(lambda: relay.state.consoles == 1)
        deadline = time.monotonic() + 4 * SILENCE_FACTOR * HEARTBEAT
        while time.monotonic() < deadline:  # bounded: ends at the deadline
            pong = await ws.ping()
            await asyncio.wait_for(pong, 2)
            await asyncio.sleep(0.3)
        assert relay.state.consoles == 1  # kept well past the silence deadline


async def test_a_console_silent_without_pings_is_closed_after_the_silence_deadline(
    relay: Relay,
) -> None:
    async with connect(relay.ws + "/v1/console", ping_interval=None, close_timeout=1) as ws:
        _session, answer = await console_handshake(ws, relay.tokens["tech"])
        assert isinstance(answer, m.AuthAccepted)
        opened = time.monotonic()
        assert await close_code(ws, timeout=10 * HEARTBEAT) == PeerSilentError.close_code
        assert time.monotonic() - opened >= SILENCE_FACTOR * HEARTBEAT * 0.9


class BlackHoleProxy:
    """A TCP proxy on 127.0.0.1 that, once told, stops forwarding its current connections both
    ways while keeping their sockets open (a relay black-holed by the network)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.connections = 0
        self.connected = asyncio.Event()
        self._holes: list[list[bool]] = []
        self._writers: list[asyncio.StreamWriter] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    def black_hole(self) -> None:
        """From now on the connections open so far forward nothing; new ones still work."""
        for hole in self._holes:
            hole[0] = True

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.connected.set()
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._writers += (writer, up_writer)
        hole = [False]
        self._holes.append(hole)
        await asyncio.gather(
            self._pipe(reader, up_writer, hole),
            self._pipe(up_reader, writer, hole),
            return_exceptions=True,
        )

    @staticmethod
    async def _pipe(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, hole: list[bool]
    ) -> None:
        while data := await reader.read(65536):
            if not hole[0]:
                writer.write(data)
                await writer.drain()

    async def close(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self._writers:
            writer.close()
        await self.server.wait_closed()


def _quick() -> Iterator[float]:
    return backoff(base=0.2, cap=0.5)


async def test_agent_notices_a_black_holed_relay_within_two_intervals_and_reconnects(
    relay: Relay,
) -> None:
    device_id, key = await relay.enrol()
    proxy = BlackHoleProxy(relay.server.port)  # type: ignore[arg-type]
    port = await proxy.start()
    identity = Identity(device_id, f"ws://127.0.0.1:{port}", key)
    opens: list[float] = []
    failures: list[tuple[float, BaseException]] = []

    async def on_open(_opened: object) -> None:
        opens.append(time.monotonic())

    stop = asyncio.Event()
    agent = asyncio.ensure_future(
        run_agent(
            identity,
            stop,
            delays=_quick,
            on_open=on_open,
            on_failure=lambda exc: failures.append((time.monotonic(), exc)),
        )
    )
    try:
        await wait_until(
            lambda: len(opens) == 1 and relay.state.router.agent(device_id) is not None
        )
        await asyncio.sleep(1.5 * HEARTBEAT)  # a few heartbeats go through the proxy
        assert failures == []
        silenced = time.monotonic()
        proxy.black_hole()
        await wait_until(lambda: bool(failures), timeout=10 * HEARTBEAT)
        noticed, error = failures[0]
        assert isinstance(error, PeerSilentError)
        assert noticed - silenced <= 2 * HEARTBEAT
        # …and it reconnects on a new TCP connection, authenticated again
        await wait_until(lambda: len(opens) == 2, timeout=10 * HEARTBEAT)
        assert proxy.connections == 2
        await wait_until(lambda: relay.state.router.agent(device_id) is not None)
    finally:
        stop.set()
        await asyncio.wait_for(agent, 10)
        await proxy.close()


async def test_request_replies_are_routed_by_id_and_each_wait_is_bounded(relay: Relay) -> None:
    device_id, key = await relay.enrol()
    requests: asyncio.Queue[m.Message] = asyncio.Queue(4)
    async with (
        open_connection(
            relay.ws + "/v1/agent",
            Role.AGENT,
            "test-agent",
            _signer(device_id, key),  # type: ignore[arg-type]
            on_message=requests.put_nowait,
        ),
        ConsoleConnection.open(relay.ws, relay.tokens["tech"]) as console,
    ):
        request = m.DiagnosticsRequest(
            id=console.session.next_id(), device_id=device_id, timeout=30.0
        )
        replies = console.request(request, timeout=0.5)
        with pytest.raises(asyncio.TimeoutError):
            await replies.__anext__()  # the agent never answers: the wait ends, no hang
        assert console.session.requests_in_flight == 0  # abandoned: a late reply is dropped
        assert isinstance(await _next_request(requests), m.DiagnosticsRequest)


async def test_console_request_on_a_closed_connection_raises_why(relay: Relay) -> None:
    device_id, _key = await relay.enrol()
    async with ConsoleConnection.open(relay.ws, relay.tokens["tech"]) as console:
        await relay.server.close()  # the relay goes away while the console waits
        request = m.DiagnosticsRequest(id=console.session.next_id(), device_id=device_id)
        with pytest.raises((ConnectionClosed, OSError)):
            async for _reply in console.request(request, timeout=30.0):
                pass
