"""``device.handover`` on the relay (docs/protocol.md#changing-provider), on SQLite and on
PostgreSQL: the device is marked handed over, audited, told when and closed; its identity is
refused from then on; another device's id, and a relay session of an older version, change
nothing."""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING

import pytest
from websockets.asyncio.client import connect

from posassist.protocol import messages as m
from posassist.relay.storage import DeviceStatus
from tests.relay.conftest import PG_URL, _pg_admin
from tests.relay.harness import (
    Agent,
    Console,
    Relay,
    agent_handshake,
    close_code,
    start_relay,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path


@pytest.fixture(params=["sqlite", "postgresql"])
async def relay(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Relay]:
    schema = None
    overrides: dict[str, object] = {}
    if request.param == "postgresql":
        schema = f"t_{secrets.token_hex(6)}"
        admin = await _pg_admin()
        try:
            await admin.execute(f'CREATE SCHEMA "{schema}"')
        finally:
            await admin.close()
        overrides.update(database_url=PG_URL, database_schema=schema)
    relay = await start_relay(tmp_path, **overrides)
    try:
        yield relay
    finally:
        await relay.server.close()
        if schema is not None:
            admin = await _pg_admin()
            try:
                await admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
            finally:
                await admin.close()


async def test_a_handed_over_device_is_marked_audited_closed_and_refused(relay: Relay) -> None:
    device_id, key = await relay.enrol()
    async with Agent(relay, device_id, key) as agent, Console(relay) as console:
        # a request in flight to it ends with the move, not at its timeout
        await console.request(m.DiagnosticsRequest(id=5, device_id=device_id, timeout=30))
        (asked,) = await agent.next()
        assert isinstance(asked, m.DiagnosticsRequest)
        before = relay.state.now()
        await agent.reply(m.DeviceHandover(id=1, device_id=device_id))
        (answer,) = await agent.next()
        assert isinstance(answer, m.DeviceHandedOver)
        assert answer.handed_over_at >= before
        assert agent.ws is not None
        assert await close_code(agent.ws) == 4004
        (ended,) = await console.next()
        assert isinstance(ended, m.ErrorReply)
        assert ended.code == "handed_over"
    device = await relay.state.storage.get_device(device_id)
    assert device.status is DeviceStatus.HANDED_OVER
    assert device.handed_over_at == answer.handed_over_at
    assert ("device.handover", "ok", f"device:{device_id}") in await relay.audit_actions()
    # the old identity is refused from now on, with the reason, and that is audited too
    async with connect(relay.ws + "/v1/agent") as ws:
        _, refused = await agent_handshake(ws, device_id, key)
        assert refused == m.AuthRefused(code="handed_over")
    assert ("agent.connect", "refused", f"device:{device_id}") in await relay.audit_actions()
    # the console lists it as handed over, with the time
    status, listed = await relay.get("/v1/devices", relay.tokens["admin"])
    assert status == 200
    devices = listed["devices"]
    assert isinstance(devices, list)
    (row,) = [d for d in devices if d["id"] == device_id]
    assert (row["status"], row["handed_over_at"]) == ("handed_over", answer.handed_over_at)


async def test_its_jobs_of_unknown_outcome_end_failed_it_never_comes_back(relay: Relay) -> None:
    from posassist.relay.storage import JobStatus

    device_id, key = await relay.enrol()
    storage = relay.state.storage
    job = await storage.create_job(device_id, "script.run", "user:tech", now=relay.state.now())
    await storage.start_job(job.id, now=relay.state.now())
    await storage.mark_unfinished_jobs_unknown(("script.run",), "lost", now=relay.state.now())
    assert (await storage.get_job(job.id)).status is JobStatus.UNKNOWN
    async with Agent(relay, device_id, key) as agent:
        await agent.reply(m.DeviceHandover(id=1, device_id=device_id))
        replies = await agent.next()
        while not any(isinstance(r, m.DeviceHandedOver) for r in replies):
            replies = await agent.next()  # a job.query about the unknown job may come first
        assert agent.ws is not None
        assert await close_code(agent.ws) == 4004
    ended = await storage.get_job(job.id)
    assert ended.status is JobStatus.FAILED
    assert ended.error is not None
    assert ended.error.startswith("device_handed_over")


async def test_a_device_can_not_hand_over_another(relay: Relay) -> None:
    device_id, key = await relay.enrol()
    other_id, _ = await relay.enrol()
    async with Agent(relay, device_id, key) as agent:
        await agent.reply(m.DeviceHandover(id=1, device_id=other_id))
        (answer,) = await agent.next()
        assert isinstance(answer, m.ErrorReply)
        assert answer.code == "forbidden"
        await agent.reply(m.Heartbeat(seq=1, sent_at=1.0))  # still served
        (ack,) = await agent.next()
        assert isinstance(ack, m.HeartbeatAck)
    for each in (device_id, other_id):
        assert (await relay.state.storage.get_device(each)).status is DeviceStatus.ACTIVE
    assert ("device.handover", "refused", f"device:{device_id}") in await relay.audit_actions()


async def test_a_version_6_session_can_not_hand_over(relay: Relay) -> None:
    device_id, key = await relay.enrol()
    async with Agent(relay, device_id, key, versions=(1, 2, 3, 4, 5, 6)) as agent:
        assert agent.session is not None
        assert agent.session.version == 6
        # sent anyway, past our own session's refusal: the relay closes with a protocol error
        from posassist.protocol import Codec

        assert agent.ws is not None
        await agent.ws.send(Codec().encode(m.DeviceHandover(id=1, device_id=device_id)))
        assert await close_code(agent.ws) == 1002
    assert (await relay.state.storage.get_device(device_id)).status is DeviceStatus.ACTIVE


async def test_the_web_console_shows_a_handed_over_device_with_the_time(relay: Relay) -> None:
    from aiohttp import ClientSession, CookieJar

    from posassist.relay.web.fleet import human_time, zone
    from tests.relay.test_web_console import Browser

    device_id, key = await relay.enrol()
    async with Agent(relay, device_id, key) as agent:
        await agent.reply(m.DeviceHandover(id=1, device_id=device_id))
        (answer,) = await agent.next()
        assert isinstance(answer, m.DeviceHandedOver)
    async with ClientSession(cookie_jar=CookieJar(unsafe=True)) as http:
        browser = Browser(relay.http, http)
        await browser.sign_in("admin")
        device = await relay.state.storage.get_device(device_id)
        store = await relay.state.storage.get_store(device.store_id)
        shown = human_time(answer.handed_over_at, zone(store.timezone), relay.state.now(), "zh-CN")
        assert shown
        _, rows, _ = await browser.get("/fleet/rows")
        row = rows[rows.index(f"/devices/{device_id}") :]
        assert "已转移" in row[:400]
        assert shown.split(" (")[0] in row[:400]
        assert 'class="device handed_over' in rows
        status, page, _ = await browser.get(f"/devices/{device_id}")
        assert status == 200
        assert "已转移" in page
        assert "转移到其他服务商" in page
        assert shown.split(" (")[0] in page
        assert "/revoke" not in page  # nothing to revoke: it is refused already
