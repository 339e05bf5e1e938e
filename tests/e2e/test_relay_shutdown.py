"""Graceful shutdown of a real relay process: SIGTERM stops it accepting, lets a request in flight
finish within the grace period, then closes every peer with 1001 and exits 0, its audit intact."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
from typing import TYPE_CHECKING

from aiohttp import ClientConnectionError, ClientSession

from posassist.protocol import messages as m
from tests.e2e.cli import (
    admin_token,
    diag_in_flight,
    enrol_over_http,
    invite,
    ok,
    provision,
    py,
    start_relay,
    stop,
)
from tests.relay.harness import close_code, recv, send

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
        device_id, key = await enrol_over_http(url, invite(data, store, url))
        async with diag_in_flight(url, device_id, key, await admin_token(url), 11) as flight:
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
            flight.agent.send(
                m.DiagnosticsReport(
                    id=flight.request.id,
                    device_id=device_id,
                    collected_at=1.0,
                    sections={"ok": True},
                )
            )
            await send(flight.agent_ws, flight.agent)
            (report,) = await recv(flight.console_ws, flight.console)
            assert isinstance(report, m.DiagnosticsReport)
            assert report.id == 11
            # Then both are told the relay is going away (agents reconnect elsewhere or later).
            assert await close_code(flight.agent_ws) == 1001
            assert await close_code(flight.console_ws) == 1001
        assert await asyncio.to_thread(proc.wait, 15) == 0
    finally:
        stop(proc)
    with sqlite3.connect(data / "relay.db") as db:
        statuses = [status for (status,) in db.execute("SELECT status FROM jobs")]
    assert statuses == ["succeeded"]  # finished during the grace period, not failed
    assert "intact" in ok(py("relay", "audit", "verify", "--data", str(data))).lower()
