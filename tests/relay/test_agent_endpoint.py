"""The relay's agent endpoint over a real websocket: every bad frame, heartbeats, silence.

Enrolment, refusals and routing are in test_relay_core.py; this file is about the wire.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import msgpack
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from posassist.protocol import Codec
from posassist.protocol import messages as m
from posassist.relay.storage import JobStatus
from tests.relay.harness import Agent, Console, Relay, close_code, drain, start_relay, wait_until

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from websockets.asyncio.client import ClientConnection

CODEC = Codec()


@pytest.fixture
async def relay(tmp_path: Path) -> AsyncIterator[Relay]:
    relay = await start_relay(tmp_path)
    yield relay
    await relay.server.close()


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
    relay: Relay, what: str, frame: bytes, code: int
) -> None:
    device_id, key = await relay.enrol()
    async with connect(relay.ws + "/v1/agent", max_size=None) as ws:
        await ws.send(frame)
        assert await close_code(ws) == code
    # nothing lost: the relay still serves an honest agent afterwards
    async with Agent(relay, device_id, key):
        assert relay.state.router.agent(device_id) is not None


async def test_relay_closes_text_frame(relay: Relay) -> None:
    async with connect(relay.ws + "/v1/agent") as ws:
        await ws.send("hello")
        assert await close_code(ws) == 1007


async def test_relay_closes_agent_replying_to_unknown_request(relay: Relay) -> None:
    device_id, key = await relay.enrol()
    async with Agent(relay, device_id, key) as agent:
        assert agent.ws is not None
        await agent.ws.send(CODEC.encode(m.ConsentAnswer(id=42, granted=True)))
        assert await close_code(agent.ws) == 1002
    await wait_until(lambda: relay.state.router.agent(device_id) is None)


async def test_relay_answers_heartbeat_with_its_clock(relay: Relay) -> None:
    device_id, key = await relay.enrol()
    async with Agent(relay, device_id, key) as agent:
        await agent.reply(m.Heartbeat(seq=5, sent_at=100.0))
        (ack,) = await agent.next()
        assert isinstance(ack, m.HeartbeatAck)
        assert (ack.seq, ack.sent_at) == (5, 100.0)
        assert abs(ack.received_at - relay.clock()) < 5


async def test_relay_acknowledges_an_alert_it_once_answered_unsupported(relay: Relay) -> None:
    device_id, key = await relay.enrol()
    async with Agent(relay, device_id, key) as agent:
        await agent.reply(
            m.AlertRaised(
                id=1,
                device_id=device_id,
                alert_key="k",
                check_name="printer.paper",
                severity="warning",
                state="firing",
                summary="纸将用尽",
                observed_at=1.0,
            )
        )
        (answer,) = await agent.next()
        assert answer == m.AlertAcknowledged(id=1, duplicate=False)  # docs/alerts.md


async def test_relay_drops_agent_silent_past_the_silence_deadline(tmp_path: Path) -> None:
    relay = await start_relay(tmp_path, heartbeat_interval=1.0)  # silent 1.5 s: gone
    try:
        device_id, key = await relay.enrol()
        async with Agent(relay, device_id, key) as agent:
            assert agent.ws is not None
            async with asyncio.timeout(10):
                with pytest.raises(ConnectionClosed):
                    await drain(agent.ws)
            assert agent.ws.close_code == 4009
        assert relay.state.router.agent(device_id) is None
    finally:
        await relay.server.close()


async def test_relay_times_out_a_silent_client_during_handshake(relay: Relay) -> None:
    async with connect(relay.ws + "/v1/agent") as ws, asyncio.timeout(8):
        with pytest.raises(ConnectionClosed):
            await drain(ws)


AFTER_SIGN_IN = [
    ("oversized frame", b"\x00" * (1024 * 1024 + 1), 1009),
    ("garbage", b"\xc1\xc1", 1007),
    ("unknown tag", msgpack.packb({"t": "shell", "cmd": "rm -rf /"}), 1003),
]


@pytest.mark.parametrize(
    ("what", "frame", "code"), AFTER_SIGN_IN, ids=[b[0] for b in AFTER_SIGN_IN]
)
async def test_agent_sending_a_bad_frame_mid_request_fails_that_request_clearly(
    relay: Relay, what: str, frame: bytes, code: int
) -> None:
    # Signed in and streaming a script's output, the agent sends a bad frame: it alone is closed,
    # the console hears a clear error, the job is marked unknown (the script may have run), and
    # the chain stays whole.
    device_id, key = await relay.enrol()
    async with Agent(relay, device_id, key) as agent, Console(relay) as console:
        run = m.ScriptRunRequest(id=9, device_id=device_id, script="printer-status", version="1")
        await console.request(run)
        (request,) = await agent.next()
        await agent.reply(m.ScriptStarted(id=request.id, job_id="j", started_at=1.0))  # type: ignore[attr-defined]
        (started,) = await console.next()
        assert isinstance(started, m.ScriptStarted)
        assert agent.ws is not None
        await agent.ws.send(frame)
        assert await close_code(agent.ws) == code
        (error,) = await console.next()
        assert isinstance(error, m.ErrorReply)
        # the script had started: whether it ran to the end is unknown until the agent says
        assert (error.id, error.code) == (9, "outcome_unknown")
    await wait_until(lambda: relay.state.router.routes_in_flight == 0)
    jobs = await relay.state.storage.run_read(
        lambda conn: conn.exec_driver_sql("SELECT status FROM jobs").all()
    )
    assert [JobStatus(status) for (status,) in jobs] == [JobStatus.UNKNOWN]
    # nothing lost: the device connects again and is served
    async with Agent(relay, device_id, key):
        assert relay.state.router.agent(device_id) is not None


@pytest.mark.parametrize(
    ("what", "frame", "code"), AFTER_SIGN_IN, ids=[b[0] for b in AFTER_SIGN_IN]
)
async def test_console_sending_a_bad_frame_after_sign_in_is_closed_alone(
    relay: Relay, what: str, frame: bytes, code: int
) -> None:
    device_id, key = await relay.enrol()
    async with Agent(relay, device_id, key) as agent, Console(relay) as bad, Console(relay) as good:
        assert bad.ws is not None
        await bad.ws.send(frame)
        assert await close_code(bad.ws) == code
        assert relay.state.router.agent(device_id) is not None  # the device keeps its link
        await good.request(m.DiagnosticsRequest(id=2, device_id=device_id, timeout=5))
        (request,) = await agent.next()
        assert isinstance(request, m.DiagnosticsRequest)


async def test_pings_do_not_keep_a_socket_that_never_signs_in(relay: Relay) -> None:
    # The handshake deadline is fixed: a stranger pinging without ever saying hello is closed.
    async with connect(relay.ws + "/v1/agent") as ws:
        loop = asyncio.get_running_loop()
        start = loop.time()
        with pytest.raises(ConnectionClosed):
            await _ping_until_closed(ws)
        timeout = relay.state.config.handshake_timeout
        assert loop.time() - start < timeout + 3


async def _ping_until_closed(ws: ClientConnection) -> None:
    async with asyncio.timeout(15):
        while True:
            await ws.ping()
            await asyncio.sleep(0.2)  # a pinging peer's pace, not synchronisation
