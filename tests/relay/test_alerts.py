"""Alert lifecycle on a real relay (aiohttp TestServer, SQLite and PostgreSQL), with agents
speaking the protocol over real websockets: idempotent ingest, one alert per (device, check),
acknowledge, resolve, reopen, times labelled, every change audited."""

from __future__ import annotations

import pytest

from posassist.protocol import messages as m
from posassist.relay.audit import verify_store
from tests.relay.alerting import raised, relay, send_event
from tests.relay.harness import Agent, Relay

__all__ = ["relay"]  # the fixture: SQLite and PostgreSQL


async def alerts_of(relay: Relay, query: str = "", user: str = "tech") -> list[dict[str, object]]:
    status, body = await relay.get(f"/v1/alerts{query}", relay.tokens[user])
    assert status == 200, body
    alerts = body["alerts"]
    assert isinstance(alerts, list)
    return alerts


async def test_the_same_event_twice_makes_one_alert_and_the_second_is_a_duplicate(
    relay: Relay,
) -> None:
    device_id, key = await relay.enrol()
    async with Agent(relay, device_id, key) as agent:
        first = await send_event(agent, raised(1, "printer-1"))
        again = await send_event(agent, raised(2, "printer-1"))
    assert first == m.AlertAcknowledged(id=1, duplicate=False)
    assert again == m.AlertAcknowledged(id=2, duplicate=True)
    (alert,) = await alerts_of(relay)
    assert alert["events"] == 1
    assert alert["status"] == "open"
    history = [r.action for r in [r async for r in relay.state.storage.records()]]
    assert history.count("alert.opened") == 1
    sample = relay.state.metrics.registry.get_sample_value
    assert sample("posassist_relay_alert_events_total", {"result": "stored"}) == 1
    assert sample("posassist_relay_alert_events_total", {"result": "duplicate"}) == 1


async def test_repeats_update_one_alert_which_resolves_and_reopens(relay: Relay) -> None:
    device_id, key = await relay.enrol()
    t0 = 1_700_000_000.0
    async with Agent(relay, device_id, key) as agent:
        for i in range(5):  # a printer flapping: five firing events, one alert
            await send_event(agent, raised(i + 1, f"k{i}", observed_at=t0 + i))
        (alert,) = await alerts_of(relay, "?open=1")
        assert (alert["events"], alert["status"], alert["reopened"]) == (5, "open", 0)
        await send_event(agent, raised(6, "k5", state="resolved", observed_at=t0 + 10))
        assert await alerts_of(relay, "?open=1") == []
        (resolved,) = await alerts_of(relay)
        assert resolved["status"] == "resolved"
        assert resolved["resolved_at"] is not None
        await send_event(agent, raised(7, "k6", observed_at=t0 + 20))
    (again,) = await alerts_of(relay)
    assert again["id"] == alert["id"]
    assert (again["status"], again["reopened"], again["resolved_at"]) == ("open", 1, None)
    actions = [r.action async for r in relay.state.storage.records()]
    assert [a for a in actions if a.startswith("alert.")] == [
        "alert.opened",
        *["alert.updated"] * 4,
        "alert.resolved",
        "alert.reopened",
    ]
    assert (await verify_store(relay.state.storage)).ok


async def test_a_recovery_with_no_alert_and_a_stale_event_change_nothing(relay: Relay) -> None:
    device_id, key = await relay.enrol()
    t0 = 1_700_000_000.0
    async with Agent(relay, device_id, key) as agent:
        answer = await send_event(agent, raised(1, "r0", state="resolved", check="disk"))
        assert answer == m.AlertAcknowledged(id=1, duplicate=False)
        assert await alerts_of(relay) == []
        await send_event(agent, raised(2, "f1", observed_at=t0 + 100, severity="warning"))
        # an older event delivered late (an outbox replayed after an outage): recorded only
        await send_event(agent, raised(3, "f0", observed_at=t0, severity="critical"))
    (alert,) = await alerts_of(relay)
    assert (alert["severity"], alert["events"]) == ("warning", 1)


async def test_alert_times_are_the_relays_receipt_beside_the_agents_clock(relay: Relay) -> None:
    device_id, key = await relay.enrol()
    wrong = relay.clock() - 2 * 3600  # the till's clock is two hours behind
    async with Agent(relay, device_id, key) as agent:
        before = relay.clock()
        await send_event(agent, raised(1, "c1", observed_at=wrong))
        after = relay.clock()
    (alert,) = await alerts_of(relay)
    assert before <= alert["opened_at"] <= after  # type: ignore[operator]
    assert alert["agent_first_observed_at"] == wrong
    status, shown = await relay.get(f"/v1/alerts/{alert['id']}", relay.tokens["tech"])
    assert status == 200
    history = shown["history"]
    assert isinstance(history, list)
    (event,) = history
    assert event["agent_observed_at"] == wrong
    assert before <= event["relay_received_at"] <= after


async def test_the_device_of_an_alert_is_the_connections_not_the_messages(relay: Relay) -> None:
    device_id, key = await relay.enrol()
    other, _ = await relay.enrol(await relay.invite(relay.other_store))
    async with Agent(relay, device_id, key) as agent:
        await send_event(agent, raised(1, "x", device_id=other))
    (alert,) = await alerts_of(relay, user="admin")
    assert alert["device_id"] == device_id


async def test_technician_acknowledges_once_viewer_cannot_and_scope_holds(relay: Relay) -> None:
    device_id, key = await relay.enrol()
    outside, outside_key = await relay.enrol(await relay.invite(relay.other_store))
    async with Agent(relay, device_id, key) as agent:
        await send_event(agent, raised(1, "a1"))
    async with Agent(relay, outside, outside_key) as agent:
        await send_event(agent, raised(1, "b1"))
    (alert,) = await alerts_of(relay)  # tech sees only the store in scope
    assert alert["device_id"] == device_id
    assert len(await alerts_of(relay, user="admin")) == 2
    other_store = await alerts_of(relay, f"?store={relay.other_store}", user="admin")
    assert [a["device_id"] for a in other_store] == [outside]

    status, body = await relay.post(f"/v1/alerts/{alert['id']}/ack", {}, relay.tokens["viewer"])
    assert (status, body["error"]) == (403, "ScopeError")
    status, body = await relay.post(f"/v1/alerts/{alert['id']}/ack", {}, relay.tokens["tech"])
    assert status == 200, body
    assert (body["status"], body["acknowledged_by"]) == ("acknowledged", "tech")
    status, body = await relay.post(f"/v1/alerts/{alert['id']}/ack", {}, relay.tokens["tech"])
    assert (status, body["error"]) == (409, "Conflict")
    outside_alert = next(a for a in await alerts_of(relay, user="admin") if a["id"] != alert["id"])
    status, body = await relay.post(
        f"/v1/alerts/{outside_alert['id']}/ack", {}, relay.tokens["tech"]
    )
    assert (status, body["error"]) == (404, "NotFound")  # out of scope looks like unknown
    status, body = await relay.get(f"/v1/alerts/{outside_alert['id']}", relay.tokens["tech"])
    assert (status, body["error"]) == (404, "NotFound")
    status, body = await relay.get(f"/v1/devices/{outside}/policy", relay.tokens["tech"])
    assert (status, body["error"]) == (404, "NotFound")
    refused = {
        (r.action, r.target, r.detail.get("reason"))
        async for r in relay.state.storage.records()
        if r.outcome == "refused" and r.actor == "user:tech"
    }
    assert {  # another tenant's ids tried: each refusal audited
        ("alert.acknowledge", f"alert:{outside_alert['id']}", "out of scope"),
        ("alert.read", f"alert:{outside_alert['id']}", "out of scope"),
        ("device.policy.read", f"device:{outside}", "out of scope"),
    } <= refused
    untouched = next(
        a for a in await alerts_of(relay, user="admin") if a["id"] == outside_alert["id"]
    )
    assert untouched["status"] == outside_alert["status"]  # the refused ack changed nothing
    status, body = await relay.post("/v1/alerts/alr_nope/ack", {}, relay.tokens["tech"])
    assert (status, body["error"]) == (404, "NotFound")
    (still,) = await alerts_of(relay)
    assert still["status"] == "acknowledged"  # a repeat keeps the acknowledgement
    actions = [(r.action, r.outcome) async for r in relay.state.storage.records()]
    assert ("alert.acknowledge", "ok") in actions
    assert ("alert.acknowledge", "refused") in actions


@pytest.mark.parametrize(
    ("query", "error"),
    [("?limit=0", "BadRequest"), ("?limit=x", "BadRequest"), ("?limit=100000", "BadRequest")],
)
async def test_bad_alert_listing_queries_are_clear_errors(
    relay: Relay, query: str, error: str
) -> None:
    status, body = await relay.get(f"/v1/alerts{query}", relay.tokens["tech"])
    assert (status, body["error"]) == (400, error)


async def test_alerts_and_the_tills_ticket_find_each_other(relay: Relay) -> None:
    device_id, key = await relay.enrol()
    async with Agent(relay, device_id, key) as agent:
        await send_event(agent, raised(1, "p1"))  # an alert first, then the merchant asks
        await agent.reply(
            m.HelpRequested(
                id=2, device_id=device_id, category="printer", description="打印机不出纸"
            )
        )
        opened = await agent.next()
        ticket = next(msg for msg in opened if isinstance(msg, m.TicketOpened))
        await send_event(agent, raised(3, "d1", check="disk"))  # and an alert after it
    alerts = {a["check"]: a for a in await alerts_of(relay)}
    assert alerts["printer"]["ticket_id"] == ticket.ticket_id
    assert alerts["disk"]["ticket_id"] == ticket.ticket_id
    actions = [r.action async for r in relay.state.storage.records()]
    assert "alert.ticket" in actions
