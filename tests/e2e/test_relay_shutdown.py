"""Graceful shutdown of a real relay process: SIGTERM stops it accepting, lets a request in flight
finish within the grace period, then closes every peer with 1001 and exits 0, its audit intact."""

from __future__ import annotations

import asyncio
import base64
import signal
import sqlite3
from typing import TYPE_CHECKING

from aiohttp import ClientConnectionError, ClientSession
from websockets.asyncio.client import connect

from protocol import messages as m
from protocol import signing
from protocol.enrolment import EnrolmentInvite
from tests.e2e.cli import ADMIN_PASSWORD, invite, ok, provision, py, start_relay, stop
from tests.relay.harness import agent_handshake, close_code, console_handshake, recv, send

if TYPE_CHECKING:
    from pathlib import Path


async def test_sigterm_finishes_the_request_in_flight_then_closes_everyone_with_1001(
    tmp_path: Path,
) -> None:
    data = tmp_path / "relay"
    store = provision(data)
    proc, url = start_relay(data)
    http = url.replace("ws://", "http://")
    try:
        secret = EnrolmentInvite.decode(invite(data, store, url)).secret
        key = signing.generate_private_key()
        raw = signing.public_key_to_raw(key.public_key())
        async with ClientSession() as client:
            body = {"secret": secret, "public_key": base64.b64encode(raw).decode()}
            async with client.post(http + "/v1/enrol", json=body) as response:
                device_id = (await response.json())["device_id"]
            login = {"username": "admin", "password": ADMIN_PASSWORD}
            async with client.post(http + "/v1/login", json=login) as response:
                token = (await response.json())["token"]
        async with (
            connect(url + "/v1/agent") as agent_ws,
            connect(url + "/v1/console") as console_ws,
        ):
            agent, accepted = await agent_handshake(agent_ws, device_id, key)
            assert isinstance(accepted, m.AuthAccepted)
            console, signed_in = await console_handshake(console_ws, token)
            assert isinstance(signed_in, m.AuthAccepted)
            console.send(m.DiagnosticsRequest(id=11, device_id=device_id, timeout=30))
            await send(console_ws, console)
            (request,) = await recv(agent_ws, agent)
            assert isinstance(request, m.DiagnosticsRequest)

            proc.send_signal(signal.SIGTERM)
            # It stops accepting at once...
            await asyncio.sleep(0.5)
            async with ClientSession() as client:
                try:
                    async with client.get(http + "/healthz") as response:
                        accepted_new = response.status
                except ClientConnectionError:
                    accepted_new = None
            assert accepted_new is None
            # ...but the request in flight finishes: the reply still reaches the console.
            agent.send(
                m.DiagnosticsReport(
                    id=request.id, device_id=device_id, collected_at=1.0, sections={"ok": True}
                )
            )
            await send(agent_ws, agent)
            (report,) = await recv(console_ws, console)
            assert isinstance(report, m.DiagnosticsReport)
            assert report.id == 11
            # Then both are told the relay is going away (agents reconnect elsewhere or later).
            assert await close_code(agent_ws) == 1001
            assert await close_code(console_ws) == 1001
        assert await asyncio.to_thread(proc.wait, 15) == 0
    finally:
        stop(proc)
    with sqlite3.connect(data / "relay.db") as db:
        statuses = [status for (status,) in db.execute("SELECT status FROM jobs")]
    assert statuses == ["succeeded"]  # finished during the grace period, not failed
    assert "intact" in ok(py("relay", "audit", "verify", "--data", str(data))).lower()
