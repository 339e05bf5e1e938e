"""The relay's agent endpoint over a real websocket: handshake, refusals, and every bad frame."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import msgpack
import pytest
from aiohttp.test_utils import TestServer
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from protocol import Codec, Role, Session, SessionState, signing
from protocol import messages as m
from relay.app import STATE, create_app
from relay.config import RelayConfig
from relay.devices import DirectoryDeviceKeys

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

CODEC = Codec()


@pytest.fixture
async def relay(tmp_path: Path) -> AsyncIterator[TestServer]:
    config = RelayConfig.load(tmp_path / "relay", heartbeat_interval=1.0, handshake_timeout=2.0)
    server = TestServer(create_app(config), host="127.0.0.1")
    await server.start_server()
    yield server
    await server.close()


@pytest.fixture
def device_key(relay: TestServer) -> signing.Ed25519PrivateKey:
    key = signing.generate_private_key()
    state = relay.app[STATE]
    DirectoryDeviceKeys(state.config.data_dir / "devices").add("till-1", key.public_key())
    return key


def ws_url(server: TestServer) -> str:
    return f"ws://127.0.0.1:{server.port}/v1/agent"


async def drain(ws: ClientConnection) -> None:
    """Read frames until the connection closes (raises ConnectionClosed)."""
    while True:
        await ws.recv()


async def closed_with(ws: ClientConnection) -> int:
    """Read until the relay closes; return its close code."""
    async with asyncio.timeout(5):
        with pytest.raises(ConnectionClosed) as info:
            await drain(ws)
    assert info.value.rcvd is not None
    return info.value.rcvd.code


async def handshake(
    ws: ClientConnection, key: signing.Ed25519PrivateKey, device_id: str = "till-1"
) -> tuple[Session, list[m.Message]]:
    session = Session(Role.AGENT)
    session.send_hello("test-agent")
    for frame in session.data_to_send():
        await ws.send(frame)
    events: list[m.Message] = []
    while session.state is not SessionState.CHALLENGED:
        session.receive_data(await ws.recv())  # type: ignore[arg-type]
        events += session.events_received()
    welcome, challenge = events
    assert isinstance(welcome, m.Welcome)
    assert isinstance(challenge, m.AuthChallenge)
    payload = signing.auth_payload(welcome.relay_id, device_id, challenge.nonce, welcome.version)
    session.send_auth_response(device_id, signing.sign(key, payload))
    for frame in session.data_to_send():
        await ws.send(frame)
    session.receive_data(await ws.recv())  # type: ignore[arg-type]
    return session, session.events_received()


async def test_relay_accepts_enrolled_agent_and_answers_heartbeat(relay, device_key) -> None:
    async with connect(ws_url(relay)) as ws:
        session, (accepted,) = await handshake(ws, device_key)
        assert isinstance(accepted, m.AuthAccepted)
        assert accepted.principal == "till-1"
        assert "till-1" in relay.app[STATE].agents
        session.send_heartbeat(1, 100.0)
        await ws.send(session.data_to_send()[0])
        session.receive_data(await ws.recv())  # type: ignore[arg-type]
        (ack,) = session.events_received()
        assert isinstance(ack, m.HeartbeatAck)
        assert ack.seq == 1
    await asyncio.sleep(0.1)
    assert relay.app[STATE].agents == {}


async def test_relay_refuses_unknown_device(relay) -> None:
    async with connect(ws_url(relay)) as ws:
        _, (refused,) = await handshake(ws, signing.generate_private_key(), "stranger")
        assert refused == m.AuthRefused(code="unknown_device")
        assert await closed_with(ws) == 4001
    assert relay.app[STATE].agents == {}


async def test_relay_refuses_signature_from_wrong_key(relay, device_key) -> None:
    async with connect(ws_url(relay)) as ws:
        _, (refused,) = await handshake(ws, signing.generate_private_key(), "till-1")
        assert refused == m.AuthRefused(code="bad_signature")
        assert await closed_with(ws) == 4001
    assert relay.app[STATE].agents == {}


async def test_relay_refuses_device_id_that_is_a_path(relay, device_key) -> None:
    async with connect(ws_url(relay)) as ws:
        _, (refused,) = await handshake(ws, device_key, "../devices/till-1")
        assert refused == m.AuthRefused(code="unknown_device")


async def test_second_connection_replaces_the_first(relay, device_key) -> None:
    async with connect(ws_url(relay)) as first:
        await handshake(first, device_key)
        async with connect(ws_url(relay)) as second:
            await handshake(second, device_key)
            assert await closed_with(first) == 4002
            assert relay.app[STATE].agents["till-1"].peer.ws is not None
        await asyncio.sleep(0.1)
    assert relay.app[STATE].agents == {}


HELLO = CODEC.encode(m.Hello(role="agent", versions=(1,), software="t"))

BAD_OPENINGS = [
    ("garbage", b"\xc1\xc1\xc1", 1007),
    ("truncated", HELLO[:-2], 1007),
    ("trailing garbage", HELLO + b"\x00", 1007),
    ("deep nesting", b"\x91" * 10_000 + b"\xc0", 1007),
    ("million-entry map declared", b"\xdf\x00\x0f\x42\x40\xa1a\x01", 1007),
    ("non-string key", msgpack.packb({1: 2}), 1007),
    ("unknown tag", msgpack.packb({"t": "shell", "cmd": "rm -rf /"}), 1003),
    ("missing field", msgpack.packb({"t": "hello", "role": "agent", "versions": [1]}), 1007),
    ("unsupported version", CODEC.encode(m.Hello(role="agent", versions=(9,), software="")), 4000),
    (
        "console on agent endpoint",
        CODEC.encode(m.Hello(role="console", versions=(1,), software="")),
        1002,
    ),
    ("illegal in state", CODEC.encode(m.Heartbeat(seq=1, sent_at=1.0)), 1002),
    ("oversized frame", b"\x00" * (1024 * 1024 + 1), 1009),
]


@pytest.mark.parametrize(("what", "frame", "code"), BAD_OPENINGS, ids=[b[0] for b in BAD_OPENINGS])
async def test_relay_closes_bad_frame_with_its_code_and_keeps_serving(
    relay, device_key, what: str, frame: bytes, code: int
) -> None:
    async with connect(ws_url(relay), max_size=None) as ws:
        await ws.send(frame)
        assert await closed_with(ws) == code
    # nothing lost: the relay still serves an honest agent afterwards
    async with connect(ws_url(relay)) as ws:
        _, (accepted,) = await handshake(ws, device_key)
        assert isinstance(accepted, m.AuthAccepted)


async def test_relay_closes_text_frame(relay) -> None:
    async with connect(ws_url(relay)) as ws:
        await ws.send("hello")
        assert await closed_with(ws) == 1007


async def test_relay_closes_on_reply_to_unknown_request(relay, device_key) -> None:
    async with connect(ws_url(relay)) as ws:
        await handshake(ws, device_key)
        await ws.send(CODEC.encode(m.ConsentAnswer(id=42, granted=True)))
        assert await closed_with(ws) == 1002
    await asyncio.sleep(0.05)
    assert relay.app[STATE].agents == {}


async def test_relay_drops_agent_silent_past_three_heartbeats(relay, device_key) -> None:
    async with connect(ws_url(relay)) as ws:
        await handshake(ws, device_key)
        async with asyncio.timeout(6):
            with pytest.raises(ConnectionClosed):
                await drain(ws)
    assert relay.app[STATE].agents == {}


async def test_relay_times_out_a_silent_client_during_handshake(relay) -> None:
    async with connect(ws_url(relay)) as ws, asyncio.timeout(5):
        with pytest.raises(ConnectionClosed):
            await ws.recv()


async def test_healthz_counts_agents(relay, device_key) -> None:
    from aiohttp import ClientSession

    async with ClientSession() as http, connect(ws_url(relay)) as ws:
        await handshake(ws, device_key)
        async with http.get(f"http://127.0.0.1:{relay.port}/healthz") as response:
            body = await response.json()
    assert body["agents"] == 1
    assert body["status"] == "ok"
