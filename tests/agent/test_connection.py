"""The agent's connection against a real in-process relay: handshake, heartbeats, requests."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest
from aiohttp.test_utils import TestServer

from agent.config import Identity, create_identity
from agent.connection import AgentConnection, Opened, agent_url, connect_once
from agent.errors import RelayRefusedError
from protocol import Codec, signing
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
    config = RelayConfig.load(tmp_path / "relay", heartbeat_interval=1.0)
    server = TestServer(create_app(config), host="127.0.0.1")
    await server.start_server()
    yield server
    await server.close()


def enrol(relay: TestServer, tmp_path: Path, device_id: str = "till-1") -> Identity:
    identity = create_identity(tmp_path / device_id, device_id, f"ws://127.0.0.1:{relay.port}")
    keys = DirectoryDeviceKeys(relay.app[STATE].config.data_dir / "devices")
    keys.add(device_id, identity.key.public_key())
    return identity


async def test_agent_handshake_reports_relay_and_version(relay, tmp_path) -> None:
    identity = enrol(relay, tmp_path)
    opened = await connect_once(identity, serve=False)
    assert opened.relay_id == relay.app[STATE].config.relay_id
    assert opened.version == 1
    assert opened.heartbeat_interval == 1.0


async def test_unenrolled_agent_gets_refusal_code(relay, tmp_path) -> None:
    identity = create_identity(tmp_path / "x", "stranger", f"ws://127.0.0.1:{relay.port}")
    with pytest.raises(RelayRefusedError) as info:
        await connect_once(identity, serve=False)
    assert info.value.code == "unknown_device"


async def test_agent_sends_heartbeats_and_stays_connected(relay, tmp_path) -> None:
    identity = enrol(relay, tmp_path)
    seen: list[float] = []

    async def opened(_: Opened) -> None:
        seen.append(relay.app[STATE].agents["till-1"].last_seen)

    task = asyncio.ensure_future(connect_once(identity, on_open=opened))
    await asyncio.sleep(3.5)  # relay drops agents silent for 3 intervals; heartbeats prevent it
    presence = relay.app[STATE].agents["till-1"]
    assert presence.last_seen > seen[0]
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_agent_answers_unknown_request_with_clear_error(relay, tmp_path) -> None:
    from websockets.asyncio.client import connect

    identity = enrol(relay, tmp_path)
    async with connect(agent_url(identity.relay_url)) as ws:
        conn = AgentConnection(ws, identity)
        opened = await conn.handshake(5)
        # play the relay's part on the agent's session: deliver a request it can't serve yet
        frame = CODEC.encode(m.ScriptRunRequest(id=7, device_id="till-1", script="s", version="1"))
        conn.session.receive_data(frame)
        for event in conn.session.events_received():
            conn._answer(event, lambda: 1.0)
        (reply_frame,) = conn.session.data_to_send()
        reply = CODEC.decode(reply_frame)
        assert isinstance(reply, m.ErrorReply)
        assert (reply.id, reply.code) == (7, "unsupported")
        assert reply.message.startswith("script.run not supported by posassist-agent/")
        assert opened.version == 1
        assert signing.fingerprint(identity.key.public_key()).startswith("SHA256:")
