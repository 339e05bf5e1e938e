"""Revocation takes effect on connections already open: a signed-out or expired console token, and
a device revoked by another process (the operator's command line) while it is connected."""

from __future__ import annotations

import asyncio
import sys
from typing import TYPE_CHECKING

import pytest
from websockets.asyncio.client import connect

from posassist.protocol import messages as m
from posassist.relay.storage import DeviceStatus, JobStatus
from tests.relay.harness import (
    Agent,
    Console,
    Relay,
    agent_handshake,
    close_code,
    start_relay,
    wait_until,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path


@pytest.fixture
async def relay(tmp_path: Path) -> AsyncIterator[Relay]:
    relay = await start_relay(tmp_path)
    yield relay
    await relay.server.close()


async def _jobs(relay: Relay) -> list[JobStatus]:
    from posassist.relay.storage import schema

    rows = await relay.state.storage.run_read(lambda conn: conn.execute(schema.jobs.select()).all())
    return [JobStatus(row.status) for row in rows]


async def test_signing_out_closes_the_consoles_using_that_token_and_no_other(relay: Relay) -> None:
    device_id, key = await relay.enrol()
    async with (
        Agent(relay, device_id, key) as agent,
        Console(relay, "viewer") as signed_out,
        Console(relay, "tech") as other,
    ):
        status, _ = await relay.post("/v1/logout", {}, relay.tokens["viewer"])
        assert status == 200
        assert signed_out.ws is not None
        assert await close_code(signed_out.ws) == 4001  # at once, not at the token's expiry
        assert len(relay.state.console_tokens) == 1
        # The other technician's console is untouched and still routes.
        await other.request(m.DiagnosticsRequest(id=3, device_id=device_id, timeout=5))
        (request,) = await agent.next()
        assert isinstance(request, m.DiagnosticsRequest)
    assert ("user.logout", "ok", "user:viewer") in await relay.audit_actions()
    await wait_until(lambda: not relay.state.console_tokens)


async def test_a_request_on_an_expired_token_closes_the_console_and_never_reaches_the_device(
    relay: Relay,
) -> None:
    device_id, key = await relay.enrol()
    async with Agent(relay, device_id, key) as agent, Console(relay) as console:
        relay.clock.offset = 9 * 3600  # past the 8-hour token
        await console.request(m.DiagnosticsRequest(id=5, device_id=device_id, timeout=5))
        assert console.ws is not None
        assert await close_code(console.ws) == 4001
        with pytest.raises(TimeoutError):
            await agent.next(timeout=0.5)  # the device never saw it
    assert await _jobs(relay) == []  # nothing recorded as sent
    refused = ("diag.request", "refused", f"device:{device_id}")
    assert refused in await relay.audit_actions()


async def test_an_idle_console_is_closed_when_its_token_expires(tmp_path: Path) -> None:
    relay = await start_relay(tmp_path, token_ttl=1.5)
    try:
        async with Console(relay) as console:
            assert console.ws is not None
            started = asyncio.get_running_loop().time()
            assert await close_code(console.ws) == 4001
            assert asyncio.get_running_loop().time() - started < 3  # not the idle timeout (6 s)
    finally:
        await relay.server.close()


async def test_a_device_revoked_from_the_command_line_is_disconnected_within_a_second(
    relay: Relay, tmp_path: Path
) -> None:
    device_id, key = await relay.enrol()
    other_id, other_key = await relay.enrol()
    async with Agent(relay, device_id, key) as agent, Agent(relay, other_id, other_key) as other:
        # The operator's command, in its own process, on the database the relay is using.
        cli = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "posassist.relay",
            "device",
            "revoke",
            "--data",
            str(tmp_path / "relay"),
            device_id,
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await cli.communicate()
        assert cli.returncode == 0, out
        assert b"revoked" in out
        assert agent.ws is not None
        assert await close_code(agent.ws, timeout=3) == 4003
        assert relay.state.router.agent(device_id) is None
        assert relay.state.router.agent(other_id) is not None  # only that device
        assert other.ws is not None
    assert (await relay.state.storage.get_device(device_id)).status is DeviceStatus.REVOKED
    async with connect(relay.ws + "/v1/agent") as ws:
        _, answer = await agent_handshake(ws, device_id, key)
        assert answer == m.AuthRefused(code="revoked")
