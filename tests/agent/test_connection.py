"""The agent against a real in-process relay: enrolment, handshake, heartbeats, requests."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest

from agent.config import load_identity
from agent.connection import AgentConnection, agent_url, connect_once
from agent.enrol import enrol
from agent.errors import ConfigError, RelayRefusedError
from protocol import Codec
from protocol import messages as m
from protocol.enrolment import EnrolmentInvite, InvalidEnrolmentToken
from tests.relay.harness import Relay, start_relay

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

CODEC = Codec()


@pytest.fixture
async def relay(tmp_path: Path) -> AsyncIterator[Relay]:
    relay = await start_relay(tmp_path, heartbeat_interval=1.0)
    yield relay
    await relay.server.close()


async def test_enrol_then_handshake(relay: Relay, tmp_path: Path) -> None:
    identity = await asyncio.to_thread(enrol, await relay.invite(), tmp_path / "till")
    assert load_identity(tmp_path / "till").device_id == identity.device_id
    opened = await connect_once(identity, serve=False)
    assert opened.relay_id == relay.state.config.relay_id
    assert (opened.version, opened.heartbeat_interval) == (2, 1.0)


async def test_enrol_refusals_leave_no_identity_behind(relay: Relay, tmp_path: Path) -> None:
    text = await relay.invite()
    await asyncio.to_thread(enrol, text, tmp_path / "first")
    with pytest.raises(RelayRefusedError) as info:
        await asyncio.to_thread(enrol, text, tmp_path / "second")
    assert "already used" in info.value.code
    assert not (tmp_path / "second" / "agent.key").exists()
    with pytest.raises(InvalidEnrolmentToken):
        await asyncio.to_thread(enrol, "PA1-garbage", tmp_path / "third")
    with pytest.raises(ConfigError, match="exists already"):
        await asyncio.to_thread(enrol, await relay.invite(), tmp_path / "first")


async def test_enrol_refuses_a_relay_that_is_not_the_one_named(
    relay: Relay, tmp_path: Path
) -> None:
    real = EnrolmentInvite.decode(await relay.invite())
    forged = EnrolmentInvite(relay_url=real.relay_url, relay_id="relay-other", secret=real.secret)
    with pytest.raises(ConfigError, match="not the one the token names"):
        await asyncio.to_thread(enrol, forged.encode(), tmp_path / "till")
    assert not (tmp_path / "till" / "agent.key").exists()


async def test_revoked_agent_gets_refusal_code(relay: Relay, tmp_path: Path) -> None:
    identity = await asyncio.to_thread(enrol, await relay.invite(), tmp_path / "till")
    await relay.state.storage.revoke_device(identity.device_id, now=relay.clock())
    with pytest.raises(RelayRefusedError) as info:
        await connect_once(identity, serve=False)
    assert info.value.code == "revoked"


async def test_agent_sends_heartbeats_and_stays_connected(relay: Relay, tmp_path: Path) -> None:
    identity = await asyncio.to_thread(enrol, await relay.invite(), tmp_path / "till")
    task = asyncio.ensure_future(connect_once(identity))
    await asyncio.sleep(4)  # the relay drops agents silent for 3 intervals (3 s here)
    assert relay.state.router.agent(identity.device_id) is not None
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_agent_answers_unknown_request_with_clear_error(relay: Relay, tmp_path: Path) -> None:
    from websockets.asyncio.client import connect

    identity = await asyncio.to_thread(enrol, await relay.invite(), tmp_path / "till")
    async with connect(agent_url(identity.relay_url)) as ws:
        conn = AgentConnection(ws, identity)
        await conn.handshake(5)
        conn.session.receive_data(
            CODEC.encode(
                m.ConsentRequest(
                    id=7,
                    device_id=identity.device_id,
                    script="s",
                    title_zh="标题",
                    title_en="t",
                    changes_zh="",
                    changes_en="",
                    expected_duration=1.0,
                    timeout=5.0,
                )
            )
        )
        for event in conn.session.events_received():
            conn._answer(event, lambda: 1.0)
        (reply_frame,) = conn.session.data_to_send()
        reply = CODEC.decode(reply_frame)
        assert isinstance(reply, m.ErrorReply)
        assert (reply.id, reply.code) == (7, "unsupported")
        assert reply.message.startswith("consent.request not supported by posassist-agent/")
