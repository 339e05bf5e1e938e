"""The relay SIGKILLed with a ticket open, on SQLite and PostgreSQL: after the restart the ticket,
its history and its audit records are all there, the chain verifies, the device finds its
ticket again, and the SLA clock still counts from when the merchant asked, not from the restart."""

from __future__ import annotations

import signal
import time
from typing import TYPE_CHECKING

import pytest
from websockets.asyncio.client import connect

from posassist.protocol import messages as m
from tests.e2e.cli import (
    admin_token,
    api,
    enrol_over_http,
    invite,
    ok,
    provision,
    py,
    start_relay,
    stop,
)
from tests.relay.harness import agent_handshake, recv, send

if TYPE_CHECKING:
    from pathlib import Path

    from posassist.protocol.signing import Ed25519PrivateKey


async def _agent_asks(
    url: str, device_id: str, key: Ed25519PrivateKey, msg: m.Message
) -> m.Message:
    # bounds, not synchronisation: a relay process on PostgreSQL, on a busy machine, may take
    # more than the harness's 5 s to answer its first sign-in or request after a restart
    async with connect(url + "/v1/agent") as ws:
        session, accepted = await agent_handshake(ws, device_id, key, timeout=30)
        assert isinstance(accepted, m.AuthAccepted)
        session.send(msg)
        await send(ws, session)
        (answer,) = await recv(ws, session, timeout=30)
        return answer


@pytest.mark.slow
async def test_relay_killed_with_a_ticket_open_loses_nothing_and_keeps_the_sla_clock(
    tmp_path: Path, database: str
) -> None:
    data = tmp_path / "relay"
    store = provision(data, database)
    extra = ("--database", database) if database else ()
    proc, url = start_relay(data, *extra)
    try:
        device_id, key = await enrol_over_http(url, invite(data, store, url, database))
        token = await admin_token(url)
        merchant = (await api(url, token, "GET", f"/v1/stores/{store}", expect=(200, 201)))[
            "merchant_id"
        ]
        await api(
            url,
            token,
            "POST",
            f"/v1/merchants/{merchant}/sla",
            {"response_seconds": 3600, "resolve_seconds": 4 * 3600},
            expect=(200, 201),
        )
        opened = await _agent_asks(
            url,
            device_id,
            key,
            m.HelpRequested(id=1, device_id=device_id, category="printer", description="卡纸"),
        )
        assert isinstance(opened, m.TicketOpened)
        before = await api(
            url, token, "GET", f"/v1/tickets/{opened.support_code}", expect=(200, 201)
        )
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=10) == -signal.SIGKILL
        killed_at = time.time()
    finally:
        stop(proc)

    proc, url = start_relay(data, *extra)
    try:
        where = ("--database", database) if database else ("--data", str(data))
        assert "intact" in ok(py("relay", "audit", "verify", *where))
        token = await admin_token(url)
        after = await api(
            url, token, "GET", f"/v1/tickets/{opened.support_code}", expect=(200, 201)
        )
        for field in ("id", "status", "created_at", "response_due", "resolve_due", "description"):
            assert after[field] == before[field], field
        assert after["events"] == before["events"]
        # the store is always open (no hours set): due one business hour after the request
        assert after["response_due"] == after["created_at"] + 3600
        listed = await _agent_asks(url, device_id, key, m.TicketQuery(id=2))
        assert isinstance(listed, m.TicketList)
        (entry,) = listed.tickets
        assert (entry["support_code"], entry["response_due"]) == (
            opened.support_code,
            after["response_due"],
        )
        report = await api(url, token, "GET", f"/v1/reports?store={store}", expect=(200, 201))
        (ticket,) = report["stores"][0]["tickets"]
        # counted from the request, through the time the relay was down
        assert ticket["response"]["business_seconds"] >= round(killed_at - after["created_at"])
        accepted = await api(
            url, token, "POST", f"/v1/tickets/{opened.support_code}/accept", expect=(200, 201)
        )
        assert accepted["status"] == "accepted"
    finally:
        stop(proc)
