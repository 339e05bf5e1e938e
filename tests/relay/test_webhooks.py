"""Alert webhooks from a real relay to a real HTTP receiver on 127.0.0.1: signed with HMAC-SHA256
over timestamp and body, routed per organisation / merchant, retried with back-off from the
durable queue, marked failed when the receiver is down, slow or answers 500, and never in the
way of ingest."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest
from aiohttp import web

from posassist.protocol import messages as m
from posassist.relay import webhooks
from posassist.relay.handlers.alerts import health_of
from tests.relay.alerting import raised, relay, send_event
from tests.relay.harness import Agent, Relay

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

__all__ = ["relay"]  # the fixture, on SQLite and PostgreSQL


@dataclass
class Receiver:
    """A webhook receiver: answers ``statuses`` in turn (then 200), or hangs while ``hang``."""

    statuses: list[int] = field(default_factory=list)
    hang: bool = False
    got: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.got.append((dict(request.headers), body))
        self.arrived.set()
        if self.hang:
            await self.release.wait()
        status = self.statuses.pop(0) if self.statuses else 200
        return web.Response(status=status, text="ok")


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    got = Receiver()
    app = web.Application()
    app.router.add_post("/hook", got.handle)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    got.url = f"http://127.0.0.1:{port}/hook"
    try:
        yield got
    finally:
        got.release.set()
        await runner.cleanup()


async def add_webhook(relay: Relay, url: str, kind: str = "merchant", node: str = "") -> str:
    status, body = await relay.post(
        "/v1/webhooks",
        {"scope_kind": kind, "scope_id": node or relay.merchant, "url": url},
        relay.tokens["admin"],
    )
    assert status == 201, body
    secret = body["secret"]
    assert isinstance(secret, str)
    return secret


def fast(relay: Relay, timeout: float = 2.0) -> None:
    """Retries in milliseconds, not minutes (the schedule's shape is the same)."""
    sender = health_of(relay.state).sender
    sender.retry_scale = 0.001
    sender.send_timeout = timeout


async def counts(relay: Relay) -> dict[str, int]:
    return await health_of(relay.state).store.delivery_counts()


async def settled(relay: Relay, total: int) -> dict[str, int]:
    """Wait until ``total`` deliveries have ended (delivered or failed); the counts."""
    seen: dict[str, int] = {}

    async def poll() -> None:
        nonlocal seen
        while True:
            seen = await counts(relay)
            if seen["delivered"] + seen["failed"] >= total:
                return
            await asyncio.sleep(0.02)

    async with asyncio.timeout(15):
        await poll()
    return seen


async def test_an_opened_alert_reaches_the_receiver_signed_and_routed(
    relay: Relay, receiver: Receiver
) -> None:
    secret = await add_webhook(relay, receiver.url)
    device_id, key = await relay.enrol()
    async with Agent(relay, device_id, key) as agent:
        await send_event(agent, raised(1, "p1"))
        await send_event(agent, raised(2, "p2"))  # a repeat: not news
        await send_event(agent, raised(3, "p3", state="resolved", observed_at=2e9))
    assert await settled(relay, 2) == {"pending": 0, "delivered": 2, "failed": 0, "cancelled": 0}
    kinds = []
    for headers, body in receiver.got:
        stamp = headers[webhooks.TIMESTAMP_HEADER]
        signature = headers[webhooks.SIGNATURE_HEADER]
        assert webhooks.verify(secret, stamp, body, signature, now=time.time())
        assert not webhooks.verify("whsec_other", stamp, body, signature, now=time.time())
        assert not webhooks.verify(secret, stamp, body + b" ", signature, now=time.time())
        payload = json.loads(body)
        assert payload["delivery"] == headers[webhooks.DELIVERY_HEADER]
        assert payload["merchant_id"] == relay.merchant
        assert payload["alert"]["device_id"] == device_id
        assert payload["alert"]["store_id"] == relay.store
        assert (
            payload["alert"]["store_timezone"] == "Asia/Shanghai"
        )  # times read in the store's zone
        kinds.append(payload["type"])
    assert kinds == ["alert.opened", "alert.resolved"]


async def test_another_merchants_webhook_hears_nothing(relay: Relay, receiver: Receiver) -> None:
    storage = relay.state.storage
    other = await storage.create_merchant(relay.org, "Tea House", now=relay.clock())
    await add_webhook(relay, receiver.url, node=other.id)
    device_id, key = await relay.enrol()
    async with Agent(relay, device_id, key) as agent:
        await send_event(agent, raised(1, "p1"))
    assert await counts(relay) == {"pending": 0, "delivered": 0, "failed": 0, "cancelled": 0}
    await add_webhook(relay, receiver.url, kind="organisation", node=relay.org)
    async with Agent(relay, device_id, key) as agent:
        await send_event(agent, raised(1, "p2", state="resolved", observed_at=2e9))
    assert await settled(relay, 1) == {"pending": 0, "delivered": 1, "failed": 0, "cancelled": 0}


async def test_a_receiver_answering_500_is_retried_then_the_delivery_fails(
    relay: Relay, receiver: Receiver
) -> None:
    fast(relay)
    receiver.statuses = [500] * webhooks.MAX_ATTEMPTS
    await add_webhook(relay, receiver.url)
    device_id, key = await relay.enrol()
    async with Agent(relay, device_id, key) as agent:
        await send_event(agent, raised(1, "p1"))
    assert await settled(relay, 1) == {"pending": 0, "delivered": 0, "failed": 1, "cancelled": 0}
    assert len(receiver.got) == webhooks.MAX_ATTEMPTS
    ids = {headers[webhooks.DELIVERY_HEADER] for headers, _ in receiver.got}
    assert len(ids) == 1  # the same delivery each time, for the receiver to de-duplicate
    error = await _last_error(relay)
    assert error == "HTTP 500"
    sample = relay.state.metrics.registry.get_sample_value
    tries = "posassist_relay_webhook_tries_total"
    assert sample(tries, {"outcome": "retried"}) == webhooks.MAX_ATTEMPTS - 1
    assert sample(tries, {"outcome": "failed"}) == 1


async def test_a_receiver_that_recovers_gets_the_delivery(relay: Relay, receiver: Receiver) -> None:
    fast(relay)
    receiver.statuses = [500, 503]
    await add_webhook(relay, receiver.url)
    device_id, key = await relay.enrol()
    async with Agent(relay, device_id, key) as agent:
        await send_event(agent, raised(1, "p1"))
    assert await settled(relay, 1) == {"pending": 0, "delivered": 1, "failed": 0, "cancelled": 0}
    assert len(receiver.got) == 3


async def test_a_receiver_that_is_down_fails_the_delivery_after_its_tries(relay: Relay) -> None:
    fast(relay)
    await add_webhook(relay, "http://127.0.0.1:9/hook")  # discard port: nothing listens
    device_id, key = await relay.enrol()
    async with Agent(relay, device_id, key) as agent:
        await send_event(agent, raised(1, "p1"))
    assert await settled(relay, 1) == {"pending": 0, "delivered": 0, "failed": 1, "cancelled": 0}
    assert "Connect" in (await _last_error(relay) or "")


async def test_a_slow_receiver_times_out_and_never_holds_up_ingest(
    relay: Relay, receiver: Receiver
) -> None:
    fast(relay, timeout=0.5)
    receiver.hang = True
    await add_webhook(relay, receiver.url)
    device_id, key = await relay.enrol()
    async with Agent(relay, device_id, key) as agent:
        await send_event(agent, raised(1, "p1"))
        await receiver.arrived.wait()  # the receiver holds the first try
        for i in range(20):  # meanwhile ingest goes on: every event acknowledged
            answer = await send_event(agent, raised(i + 2, f"d{i}", check="disk", observed_at=i))
            assert answer == m.AlertAcknowledged(id=i + 2, duplicate=False)
        assert not receiver.release.is_set()
    assert await settled(relay, 2) == {"pending": 0, "delivered": 0, "failed": 2, "cancelled": 0}
    assert "no answer within 0.5 s" in (await _last_error(relay) or "")


@pytest.mark.parametrize(
    ("body", "why"),
    [
        ({"scope_kind": "merchant", "scope_id": "m", "url": "ftp://x/"}, "scheme"),
        ({"scope_kind": "merchant", "scope_id": "m", "url": "http:///x"}, "no host"),
        ({"scope_kind": "merchant", "scope_id": "m", "url": "http://x:99999/"}, "port"),
        ({"scope_kind": "store", "scope_id": "m", "url": "http://x/"}, "level"),
        ({"scope_kind": "merchant", "url": "http://x/"}, "no scope id"),
        ({"scope_kind": "merchant", "scope_id": "m", "url": 5}, "url type"),
    ],
)
async def test_a_bad_webhook_is_refused_and_nothing_is_made(
    relay: Relay, body: dict[str, object], why: str
) -> None:
    body = {**body, "scope_id": relay.merchant} if "scope_id" in body else body
    status, answer = await relay.post("/v1/webhooks", body, relay.tokens["admin"])
    assert (status, answer["error"]) == (400, "BadRequest"), why
    status, listed = await relay.get("/v1/webhooks", relay.tokens["admin"])
    assert (status, listed) == (200, {"webhooks": []})


async def test_only_an_admin_in_scope_makes_webhooks(relay: Relay, receiver: Receiver) -> None:
    body = {"scope_kind": "merchant", "scope_id": relay.merchant, "url": receiver.url}
    status, answer = await relay.post("/v1/webhooks", body, relay.tokens["tech"])
    assert (status, answer["error"]) == (403, "ScopeError")
    status, listed = await relay.get("/v1/webhooks", relay.tokens["admin"])
    assert listed == {"webhooks": []}


async def _last_error(relay: Relay) -> str | None:
    import sqlalchemy as sa

    from posassist.relay.storage.schema_health import webhook_deliveries

    query = sa.select(webhook_deliveries.c.last_error).limit(1)
    return await relay.state.storage.run_read(lambda conn: conn.execute(query).scalar())


def test_signature_is_hmac_sha256_over_timestamp_dot_body() -> None:
    import hashlib
    import hmac

    body = b'{"type":"alert.opened"}'
    expected = hmac.new(b"s3cret", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert webhooks.sign("s3cret", 1_700_000_000, body) == f"sha256={expected}"
    signature = webhooks.sign("s3cret", 1_700_000_000, body)
    assert webhooks.verify("s3cret", "1700000000", body, signature, now=1_700_000_100)
    assert not webhooks.verify("s3cret", "1700000000", body, signature, now=1_700_001_000)
    assert not webhooks.verify("s3cret", "soon", body, signature, now=1_700_000_000)


def test_retry_schedule_backs_off_and_ends() -> None:
    delays = [webhooks.retry_delay(n) for n in range(1, webhooks.MAX_ATTEMPTS + 1)]
    assert delays == [1.0, 5.0, 30.0, 120.0, 600.0, None]
    assert webhooks.retry_delay(2, scale=0.01) == pytest.approx(0.05)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/hook",
        "http://[::1]/hook",
        "http://169.254.169.254/latest/meta-data",  # cloud metadata
        "http://10.0.0.5/hook",
        "http://[::ffff:192.168.1.1]/hook",
    ],
)
async def test_a_webhook_into_the_relays_own_network_is_refused(relay: Relay, url: str) -> None:
    import dataclasses

    relay.state.config = dataclasses.replace(relay.state.config, webhook_allow_private=False)
    body = {"scope_kind": "merchant", "scope_id": relay.merchant, "url": url}
    status, answer = await relay.post("/v1/webhooks", body, relay.tokens["admin"])
    assert (status, answer["error"]) == (400, "BadRequest")
    detail = str(answer["detail"])
    assert "loopback, private or link-local" in detail  # says why, and what to do
    assert "--webhook-allow-private" in detail
    assert url.split("/")[2] not in detail  # never the request's own words
    assert (await relay.get("/v1/webhooks", relay.tokens["admin"]))[1] == {"webhooks": []}


async def test_a_private_address_is_not_reached_at_send_time_either(
    relay: Relay, receiver: Receiver
) -> None:
    fast(relay)
    await add_webhook(relay, receiver.url)  # made while allowed; the relay then forbids it
    health_of(relay.state).sender.allow_private = False
    device_id, key = await relay.enrol()
    async with Agent(relay, device_id, key) as agent:
        await send_event(agent, raised(1, "p1"))
    assert await settled(relay, 1) == {"pending": 0, "delivered": 0, "failed": 1, "cancelled": 0}
    assert receiver.got == []
    assert "may not reach" in (await _last_error(relay) or "")


async def test_a_name_resolving_only_inside_is_refused_by_the_resolver() -> None:
    resolver = webhooks.PublicOnlyResolver()
    try:
        with pytest.raises(OSError, match="may not reach"):
            await resolver.resolve("localhost", 80)
    finally:
        await resolver.close()
    assert webhooks.public_address("8.8.8.8")
    assert not webhooks.public_address("::ffff:127.0.0.1")


@pytest.mark.parametrize(
    "address",
    ["64:ff9b::7f00:1", "64:ff9b::a00:5", "2002:7f00:1::1", "2002:c0a8:101::1", "::127.0.0.1"],
)
def test_ipv4_inside_ipv6_is_judged_as_the_ipv4_it_reaches(address: str) -> None:
    """Outside attack F6: NAT64, 6to4 and IPv4-compatible forms of loopback and private
    addresses passed; a public IPv4 so carried still may."""
    assert not webhooks.public_address(address)


def test_ipv6_carrying_a_public_ipv4_is_public() -> None:
    assert webhooks.public_address("2002:808:808::1")  # 6to4 of 8.8.8.8
    assert webhooks.public_address("2606:4700:4700::1111")


async def _delete(relay: Relay, webhook_id: str, token: str) -> tuple[int, dict[str, object]]:
    from aiohttp import ClientSession

    headers = {"Authorization": f"Bearer {token}"}
    async with (
        ClientSession() as http,
        http.delete(f"{relay.http}/v1/webhooks/{webhook_id}", headers=headers) as answer,
    ):
        return answer.status, await answer.json()


async def test_an_admin_removes_a_webhook_its_queue_is_cancelled_and_nothing_more_is_sent(
    relay: Relay,
) -> None:
    """README walk: a webhook could be made, never stopped."""
    from posassist.relay.storage import Role as UserRole
    from posassist.relay.storage import Scope, ScopeKind
    from tests.relay.harness import _HASH, PASSWORD

    await add_webhook(relay, "http://127.0.0.1:9/down")  # its receiver is down: retries pend
    listed = (await relay.get("/v1/webhooks", relay.tokens["admin"]))[1]["webhooks"]
    assert isinstance(listed, list)
    hook: dict[str, Any] = listed[0]
    device_id, key = await relay.enrol()
    async with Agent(relay, device_id, key) as agent:
        await send_event(agent, raised(1, "p1"))
    assert (await counts(relay))["pending"] == 1
    # another merchant's admin, a technician: not theirs to stop
    other = await relay.state.storage.create_merchant(relay.org, "Tea House", now=relay.clock())
    await relay.state.storage.create_user(
        "tea", _HASH, UserRole.ADMIN, Scope(ScopeKind.MERCHANT, other.id), now=relay.clock()
    )
    status, body = await relay.post("/v1/login", {"username": "tea", "password": PASSWORD})
    assert status == 200, body
    assert (await _delete(relay, hook["id"], str(body["token"])))[0] == 404
    assert (await _delete(relay, hook["id"], relay.tokens["tech"]))[0] == 403
    assert (await _delete(relay, "whk_nope", relay.tokens["admin"]))[0] == 404
    assert (await counts(relay))["pending"] == 1  # the refusals stopped nothing
    status, answer = await _delete(relay, hook["id"], relay.tokens["admin"])
    assert status == 200, answer
    assert answer["disabled_at"] is not None
    assert answer["cancelled_deliveries"] == 1
    assert (await _delete(relay, hook["id"], relay.tokens["admin"]))[1]["cancelled_deliveries"] == 0
    async with Agent(relay, device_id, key) as agent:
        await send_event(agent, raised(1, "p2", state="resolved", observed_at=2e9))
    assert await counts(relay) == {"pending": 0, "delivered": 0, "failed": 0, "cancelled": 1}
    actions = [(r.action, str(r.outcome)) async for r in relay.state.storage.records()]
    assert ("webhook.disable", "ok") in actions
    assert ("webhook.disable", "refused") in actions


async def test_a_new_ticket_and_a_missed_target_reach_the_technicians_receiver(
    relay: Relay, receiver: Receiver
) -> None:
    """A merchant's "get help" and a phone call each ping the technicians' receiver at once; a
    missed SLA target does too; another merchant's receiver hears nothing of them."""
    from tests.relay.test_tickets import ask_help

    storage = relay.state.storage
    other = await storage.create_merchant(relay.org, "Tea House", now=relay.clock())
    await add_webhook(relay, receiver.url, node=other.id)
    secret = await add_webhook(relay, receiver.url)
    sla = {"response_seconds": 600, "resolve_seconds": None}
    status, body = await relay.post(
        f"/v1/merchants/{relay.merchant}/sla", sla, relay.tokens["admin"]
    )
    assert status == 200, body
    device_id, key = await relay.enrol()
    async with Agent(relay, device_id, key) as agent:
        opened = await ask_help(agent)
    phone = {"store_id": relay.store, "description": "来电: 扫码枪没反应", "contact": "13900000000"}
    status, by_phone = await relay.post("/v1/tickets", phone, relay.tokens["admin"])
    assert status == 201, by_phone
    assert await settled(relay, 2) == {"pending": 0, "delivered": 2, "failed": 0, "cancelled": 0}
    relay.clock.offset += 3600  # the till's ticket was not answered within 10 minutes
    from posassist.relay.handlers.tickets import sweep_breaches

    assert await sweep_breaches(relay.state) == 1
    assert await settled(relay, 3) == {"pending": 0, "delivered": 3, "failed": 0, "cancelled": 0}
    notes = []
    for headers, raw in receiver.got:
        stamp, signature = headers[webhooks.TIMESTAMP_HEADER], headers[webhooks.SIGNATURE_HEADER]
        assert webhooks.verify(secret, stamp, raw, signature, now=float(stamp))  # relay clock
        payload = json.loads(raw)
        assert payload["merchant_id"] == relay.merchant
        assert headers[webhooks.EVENT_HEADER] == payload["type"]
        assert "contact" not in payload["ticket"]  # a group chat is not the place for it
        assert payload["ticket"]["store_timezone"] == "Asia/Shanghai"
        store = await relay.state.storage.get_store(relay.store)
        assert payload["ticket"]["store_name"] == store.name  # a chat reads names, not ids
        assert payload["merchant_name"]
        notes.append((payload["type"], payload["ticket"]["support_code"], payload.get("which")))
    assert notes == [
        ("ticket.opened", opened.support_code, None),
        ("ticket.opened", by_phone["code"], None),
        ("ticket.sla_breached", opened.support_code, "response"),  # the phone one was answered
    ]
