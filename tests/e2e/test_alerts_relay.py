"""Alerts through real ``posassist-relay serve`` processes on SQLite and PostgreSQL: the relay
SIGKILLed during ingest (nothing lost, nothing duplicated), 1,000 queued webhook deliveries with
the relay SIGKILLed midway (delivered and failed add up exactly), and the ``posassist alerts``
command line."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest
import sqlalchemy as sa
from aiohttp import ClientSession, web
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from posassist.protocol import messages as m
from posassist.relay.storage import open_storage
from posassist.relay.storage.schema_health import alert_events, alerts, webhook_deliveries
from tests.e2e.cli import (
    ADMIN_PASSWORD,
    Technician,
    ok,
    py,
    start_relay,
    stop,
)
from tests.relay.harness import agent_handshake, recv, send

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from posassist.protocol.signing import Ed25519PrivateKey


def event(
    key: str, check: str = "printer", state: str = "firing", at: float = 0.0
) -> m.AlertRaised:
    return m.AlertRaised(
        id=1,
        device_id="dev_x",
        alert_key=key,
        check_name=check,
        severity="critical",
        state=state,
        summary=f"{check} failing / 故障",
        observed_at=1_700_000_000.0 + at,
    )


async def deliver(
    url: str, device_id: str, key: Ed25519PrivateKey, events: list[m.AlertRaised], window: int = 64
) -> set[str]:
    """Send ``events`` as an agent's outbox does (up to ``window`` unanswered at once); the keys
    the relay acknowledged before the connection ended (by a kill or at the end)."""
    acked: set[str] = set()
    with contextlib.suppress(ConnectionClosed, OSError, TimeoutError):
        async with connect(url + "/v1/agent", close_timeout=1) as ws:
            session, accepted = await agent_handshake(ws, device_id, key)
            assert isinstance(accepted, m.AuthAccepted)
            in_flight: dict[int, str] = {}
            pending = list(events)
            while pending or in_flight:
                while pending and len(in_flight) < window:
                    sent = pending.pop(0).with_id(session.next_id())
                    in_flight[sent.id] = sent.alert_key
                    session.send(sent)
                await send(ws, session)
                for answer in await recv(ws, session, timeout=10):
                    if isinstance(answer, m.AlertAcknowledged):
                        acked.add(in_flight.pop(answer.id))
    return acked


async def _table(database_url: str, query: sa.Select[Any]) -> list[Any]:
    storage = open_storage(database_url)
    try:
        return await storage.run_read(lambda conn: list(conn.execute(query).all()))
    finally:
        await storage.close()


def _url(data: Path, database: str) -> str:
    return database or f"sqlite:///{data / 'relay.db'}"


@dataclass
class World:
    """A relay's data prepared in-process (no operator command per step: they cost seconds):
    a store, its merchant, enrolled devices and an admin's bearer token."""

    store: str
    merchant: str
    devices: list[tuple[str, Ed25519PrivateKey]]
    token: str


async def prepare(data: Path, database: str, devices: int = 1) -> World:
    from posassist.protocol import signing
    from posassist.relay.config import RelayConfig
    from posassist.relay.passwords import hash_password
    from posassist.relay.storage import Role, Scope

    relay_id = RelayConfig.load(data).relay_id  # serve reads the same identity
    storage = open_storage(_url(data, database))
    try:
        await storage.migrate()
        now = time.time()
        org = await storage.create_organisation("Acme", now=now)
        merchant = await storage.create_merchant(org.id, "Noodles", now=now)
        store = await storage.create_store(merchant.id, "Main St", now=now)
        enrolled = []
        for _ in range(devices):
            key = signing.generate_private_key()
            _, secret = await storage.create_enrolment(store.id, relay_id, now=now, ttl=600)
            device = await storage.consume_enrolment(
                secret,
                relay_id=relay_id,
                public_key=signing.public_key_to_raw(key.public_key()),
                now=now,
            )
            enrolled.append((device.id, key))
        admin = await storage.create_user(
            "admin", hash_password(ADMIN_PASSWORD), Role.ADMIN, Scope.root(), now=now
        )
        token = await storage.issue_token(admin.id, now=now, ttl=3600)
    finally:
        await storage.close()
    return World(store.id, merchant.id, enrolled, token)


async def test_relay_killed_during_ingest_loses_nothing_and_duplicates_nothing(
    tmp_path: Path, database: str
) -> None:
    data = tmp_path / "relay"
    world = await prepare(data, database)
    ((device_id, key),) = world.devices
    extra = ("--database", database) if database else ()
    proc, url = start_relay(data, *extra)
    # 300 events: one printer flapping (one alert), and 100 checks each firing once
    events = [event(f"p{i}", at=i) for i in range(200)]
    events += [event(f"c{i}", check=f"check-{i}") for i in range(100)]
    try:
        sending = asyncio.create_task(deliver(url, device_id, key, events, window=16))
        select_count = sa.select(sa.func.count()).select_from(alert_events)
        while (await _table(_url(data, database), select_count))[0][0] < 50:
            assert not sending.done(), "all sent before the kill"
            await asyncio.sleep(0.01)
        proc.send_signal(signal.SIGKILL)  # mid-stream: events in flight, some acknowledged
        assert proc.wait(timeout=10) == -signal.SIGKILL
        first = await sending
    finally:
        stop(proc)
    assert 0 < len(first) < len(events)
    proc, url = start_relay(data, *extra)
    try:
        # the agent's outbox sends again everything not acknowledged; the relay has some of it
        again = [e for e in events if e.alert_key not in first]
        second = await deliver(url, device_id, key, again)
        assert second == {e.alert_key for e in again}
        # and a redelivery of what was acknowledged changes nothing
        await deliver(url, device_id, key, events[:10])
        where = ("--database", database) if database else ("--data", str(data))
        verify = py("relay", "audit", "verify", *where)
        assert verify.returncode == 0, verify.stdout + verify.stderr
    finally:
        stop(proc)
    keys = [
        row[0] for row in await _table(_url(data, database), sa.select(alert_events.c.alert_key))
    ]
    assert sorted(keys) == sorted(e.alert_key for e in events)  # each exactly once
    rows = await _table(
        _url(data, database), sa.select(alerts.c.check_name, alerts.c.events, alerts.c.status)
    )
    by_check = {row[0]: (row[1], row[2]) for row in rows}
    assert len(rows) == 101
    assert by_check["printer"] == (200, "open")
    assert all(by_check[f"check-{i}"] == (1, "open") for i in range(100))


class Receiver:
    """Answers 500 to alerts of checks whose number is a multiple of 4, 200 to the others;
    remembers every delivery id it answered 200. It runs on a thread of its own, so that the
    test's blocking steps (starting a relay process) never stall it."""

    def __init__(self) -> None:
        self.ok: set[str] = set()
        self.hits = 0
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        body = json.loads(await request.read())
        self.hits += 1
        await asyncio.sleep(0.002)  # a receiver takes a moment
        number = int(body["alert"]["check"].rsplit("-", 1)[1])
        if number % 4 == 0:
            return web.Response(status=500)
        self.ok.add(body["delivery"])
        return web.Response(status=204)


@contextlib.contextmanager
def receiving() -> Iterator[Receiver]:
    got = Receiver()
    loop = asyncio.new_event_loop()
    started = threading.Event()
    stopping: asyncio.Event | None = None

    async def serve() -> None:
        nonlocal stopping
        stopping = asyncio.Event()
        app = web.Application()
        app.router.add_post("/hook", got.handle)
        runner = web.AppRunner(app, shutdown_timeout=0.1)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        got.url = f"http://127.0.0.1:{runner.addresses[0][1]}/hook"
        started.set()
        await stopping.wait()
        await runner.cleanup()

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    assert started.wait(10)
    try:
        yield got
    finally:
        assert stopping is not None
        loop.call_soon_threadsafe(stopping.set)
        thread.join(10)
        loop.close()


async def _counts(database_url: str) -> dict[str, int]:
    query = sa.select(webhook_deliveries.c.status, sa.func.count()).group_by(
        webhook_deliveries.c.status
    )
    counts = {"pending": 0, "delivered": 0, "failed": 0}
    counts.update({str(row[0]): int(row[1]) for row in await _table(database_url, query)})
    return counts


@pytest.mark.slow
@pytest.mark.timeout(300)  # ~35 s alone on PostgreSQL; it ran out of 120 s at load 20
async def test_a_thousand_queued_deliveries_add_up_after_a_sigkill(
    tmp_path: Path, database: str
) -> None:
    data = tmp_path / "relay"
    world = await prepare(data, database)
    ((device_id, key),) = world.devices
    extra = ("--database", database) if database else ()
    options = (
        "--webhook-timeout",
        "0.5",
        "--webhook-retry-scale",
        "0.001",
        "--webhook-allow-private",  # the receiver is on 127.0.0.1
    )
    db = _url(data, database)
    # to a file: a thousand deliveries' log lines would fill a pipe and stall the relay
    relay_log = (tmp_path / "relay.log").open("w")
    with receiving() as receiver, relay_log:
        proc, url = start_relay(data, *extra, *options, log=relay_log)
        try:
            await _webhook(url, world, receiver.url)
            # a thousand alerts open at once: a thousand deliveries queued
            events = [event(f"c{i}", check=f"check-{i}") for i in range(1000)]
            assert len(await deliver(url, device_id, key, events)) == 1000
            while receiver.hits < 300:  # noqa: ASYNC110 - the receiver's own count
                await asyncio.sleep(0.01)
            proc.send_signal(signal.SIGKILL)
            assert proc.wait(timeout=10) == -signal.SIGKILL
        finally:
            stop(proc)
        midway = await _counts(db)
        assert sum(midway.values()) == 1000
        assert midway["pending"] > 0, "all done before the kill"
        proc, url = start_relay(data, *extra, *options, log=relay_log)
        try:
            async with asyncio.timeout(20):
                while (await _counts(db))["pending"]:  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
        finally:
            stop(proc)
    final = await _counts(db)
    assert final == {"pending": 0, "delivered": 750, "failed": 250}
    query = sa.select(webhook_deliveries.c.id).where(webhook_deliveries.c.status == "delivered")
    delivered = {row[0] for row in await _table(db, query)}
    assert delivered == receiver.ok  # each delivered one reached the receiver (maybe twice)


async def _webhook(url: str, world: World, target: str) -> None:
    """A webhook of the store's merchant, made through the API as an admin."""
    body = {"scope_kind": "merchant", "scope_id": world.merchant, "url": target}
    async with (
        ClientSession() as http,
        http.post(
            url.replace("ws://", "http://") + "/v1/webhooks",
            json=body,
            headers={"Authorization": f"Bearer {world.token}"},
        ) as answer,
    ):
        assert answer.status == 201, await answer.text()


async def test_posassist_alerts_lists_in_the_stores_zone_and_acknowledges(tmp_path: Path) -> None:
    data = tmp_path / "relay"
    world = await prepare(data, "")
    (device_id, key), store = world.devices[0], world.store
    proc, url = start_relay(data)
    try:
        summary = "缺纸 / paper out \x1b[31m"  # the till's words, an escape sequence in them
        wrong_clock = 1_700_000_000.0
        events = [
            m.AlertRaised(
                id=1,
                device_id=device_id,
                alert_key="p1",
                check_name="printer",
                severity="critical",
                state="firing",
                summary=summary,
                observed_at=wrong_clock,
            )
        ]
        assert await deliver(url, device_id, key, events) == {"p1"}
        tech = Technician(tmp_path / "home").login(url)
        listed = tech("alerts", "--open")
        assert listed.returncode == 0, listed.stderr
        assert "OPEN 未处理" in listed.stdout
        assert "缺纸 / paper out" in listed.stdout
        assert "\x1b" not in listed.stdout
        assert "CST" in listed.stdout  # Asia/Shanghai, the store's zone
        assert "till clock: first seen 2023-11-15 06:13:20 CST" in listed.stdout
        as_json = json.loads(ok(tech("alerts", "--json")))
        (alert,) = as_json
        assert (alert["device_id"], alert["store_id"]) == (device_id, store)
        acked = tech("alerts", "ack", alert["id"])
        assert acked.returncode == 0, acked.stderr
        assert "已受理" in acked.stdout
        again = tech("alerts", "ack", alert["id"])
        assert again.returncode == 1  # the relay said 409: acknowledged already
        assert "acknowledged already by admin" in again.stderr, again.stderr
        assert "已由 admin 受理" in again.stderr
        bad = tech("alerts", "ack", "alr_x;rm")
        assert bad.returncode == 2
        assert "alert must be an id" in bad.stderr
        assert tech("alerts", "--store", "../x").returncode == 2
        (still,) = json.loads(ok(tech("alerts", "--json")))
        assert (still["status"], still["acknowledged_by"]) == ("acknowledged", "admin")
        assert ok(tech("alerts", "--store", store, "--open")).count("ACKED 已受理") == 1
    finally:
        stop(proc)
