"""Check policies through a real relay's API (SQLite and PostgreSQL): invalid ones refused with the
field named and nothing stored, nearest wins, ``policy.updated`` to connected agents on sign-in
and on change, and the relay's judgement of alerts by maintenance windows and store hours."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

import pytest
import sqlalchemy as sa

from posassist.protocol import messages as m
from posassist.relay.handlers.alerts import health_of
from posassist.relay.storage.schema_health import alert_events, webhook_deliveries
from tests.relay.alerting import raised, relay, send_event
from tests.relay.harness import Agent, Relay

if TYPE_CHECKING:
    from zoneinfo import ZoneInfo

__all__ = ["relay"]


async def set_policy(
    relay: Relay, kind: str, node: str | None, policy: object, user: str = "admin"
) -> tuple[int, dict[str, Any]]:
    body = {"scope_kind": kind, "scope_id": node, "policy": policy}
    return await relay.post("/v1/policies", body, relay.tokens[user])


async def alerts_of(relay: Relay) -> list[dict[str, Any]]:
    status, body = await relay.get("/v1/alerts", relay.tokens["tech"])
    assert status == 200, body
    alerts = body["alerts"]
    assert isinstance(alerts, list)
    return alerts


async def policy_message(agent: Agent) -> m.PolicyUpdated:
    (msg,) = await agent.next(policy=True)
    assert isinstance(msg, m.PolicyUpdated), msg
    return msg


@pytest.mark.parametrize(
    ("policy", "named"),
    [
        ({"checks": {"toaster": {}}}, "unknown check 'toaster'"),
        ({"checks": {"disk": {"interval": 1}}}, "checks.disk.interval"),
        ({"checks": {"disk": {"thresholds": {"free_pct": -5}}}}, "checks.disk.thresholds.free_pct"),
        ({"checks": {"disk": {"enabled": "yes"}}}, "checks.disk.enabled"),
        ({"outside_hours": "sleep"}, "outside_hours"),
        ({"remediation": {"print_queue": {"script": "rm -rf /", "version": "1.0.0"}}}, "script"),
        ({"maintenance_windows": [{"start": 10, "end": 5}]}, "end must be after start"),
        ([1, 2], "must be a map"),
    ],
)
async def test_an_invalid_policy_is_refused_naming_the_field_and_nothing_is_stored(
    relay: Relay, policy: object, named: str
) -> None:
    status, body = await set_policy(relay, "store", relay.store, policy)
    assert status == 400
    assert body["error"] == "PolicyError"
    assert named in body["detail"]
    status, body = await relay.get(
        f"/v1/policies?scope_kind=store&scope_id={relay.store}", relay.tokens["admin"]
    )
    assert status == 404
    actions = [(r.action, r.outcome) async for r in relay.state.storage.records()]
    assert ("policy.set", "refused") in actions
    assert ("policy.set", "ok") not in actions


async def test_a_policy_without_its_field_or_from_a_technician_is_refused(relay: Relay) -> None:
    status, body = await relay.post(
        "/v1/policies", {"scope_kind": "store", "scope_id": relay.store}, relay.tokens["admin"]
    )
    assert (status, body["error"]) == (400, "BadRequest")
    status, body = await set_policy(relay, "store", relay.store, {}, user="tech")
    assert (status, body["error"]) == (403, "ScopeError")


async def test_nearest_wins_and_connected_agents_hear_each_change(relay: Relay) -> None:
    device_id, key = await relay.enrol()
    async with Agent(relay, device_id, key) as agent:
        first = await policy_message(agent)  # on sign-in: nothing set, the defaults
        assert (first.version, first.policy) == (0, {"version": 0})
        assert first.hours["timezone"] == "Asia/Shanghai"
        org = {"checks": {"disk": {"interval": 600, "thresholds": {"free_pct": 20}}}}
        status, body = await set_policy(relay, "organisation", relay.org, org)
        assert status == 200, body
        assert body["devices_told"] == 1
        second = await policy_message(agent)
        assert second.policy["checks"]["disk"] == org["checks"]["disk"]
        store = {"checks": {"disk": {"thresholds": {"free_pct": 5}}}}
        assert (await set_policy(relay, "store", relay.store, store))[0] == 200
        third = await policy_message(agent)
        assert third.policy["checks"]["disk"] == {"interval": 600, "thresholds": {"free_pct": 5}}
        assert first.version < second.version < third.version
        assert (await set_policy(relay, "store", relay.store, None))[0] == 200  # removed
        fourth = await policy_message(agent)
        assert fourth.policy["checks"]["disk"]["thresholds"] == {"free_pct": 20}
        assert fourth.version > third.version
    async with Agent(relay, device_id, key) as agent:  # and again on the next sign-in
        again = await policy_message(agent)
        assert (again.version, again.policy) == (fourth.version, fourth.policy)
    status, shown = await relay.get(f"/v1/devices/{device_id}/policy", relay.tokens["tech"])
    assert (status, shown["version"]) == (200, fourth.version)


async def test_a_maintenance_window_silences_and_records(relay: Relay) -> None:
    now = relay.clock()
    window = {"start": int(now - 60), "end": int(now + 3600), "checks": ["printer"], "reason": "x"}
    assert (await set_policy(relay, "store", relay.store, {"maintenance_windows": [window]}))[
        0
    ] == 200
    device_id, key = await relay.enrol()
    async with Agent(relay, device_id, key) as agent:
        await policy_message(agent)
        answer = await send_event(agent, raised(1, "p1", observed_at=now))
        assert answer == m.AlertAcknowledged(id=1, duplicate=False)
        await send_event(agent, raised(2, "d1", check="disk", observed_at=now))
    alerts = await alerts_of(relay)
    assert [a["check"] for a in alerts] == ["disk"]  # the printer's was silenced
    query = sa.select(alert_events.c.alert_key, alert_events.c.handling)
    rows = await relay.state.storage.run_read(lambda conn: conn.execute(query).all())
    assert sorted(tuple(r) for r in rows) == [("d1", None), ("p1", "silenced")]
    actions = [r.action async for r in relay.state.storage.records()]
    assert "alert.silenced" in actions


def _closed_now(zone: ZoneInfo, now: float) -> dict[str, Any]:
    """Opening hours under which the store is closed at ``now``: open only 3 hours from now."""
    local = dt.datetime.fromtimestamp(now, zone)
    opens = local + dt.timedelta(hours=3)
    day = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")[opens.weekday()]
    start = opens.strftime("%H:00")
    end = "24:00" if opens.hour == 23 else f"{opens.hour + 1:02d}:00"
    return {"weekly": {day: [[start, end]]}}


async def test_outside_hours_an_alert_is_held_or_downgraded_as_the_policy_says(
    relay: Relay,
) -> None:
    from zoneinfo import ZoneInfo

    now = relay.clock()
    hours = _closed_now(ZoneInfo("Asia/Shanghai"), now)
    await patch_store(relay, {"hours": hours})
    policy = {"outside_hours": "hold", "checks": {"disk": {"outside_hours": "downgrade"}}}
    assert (await set_policy(relay, "store", relay.store, policy))[0] == 200
    await relay.post(
        "/v1/webhooks",
        {"scope_kind": "merchant", "scope_id": relay.merchant, "url": "http://127.0.0.1:9/h"},
        relay.tokens["admin"],
    )
    device_id, key = await relay.enrol()
    async with Agent(relay, device_id, key) as agent:
        await policy_message(agent)
        await send_event(agent, raised(1, "p1", observed_at=now))
        await send_event(agent, raised(2, "d1", check="disk", observed_at=now))
    by_check: dict[str, Any] = {a["check"]: a for a in await alerts_of(relay)}
    printer, disk = by_check["printer"], by_check["disk"]
    assert printer["severity"] == "critical"
    assert now + 2 * 3600 < printer["held_until"] <= now + 3 * 3600 + 60
    assert disk["severity"] == "warning"  # critical, one step down at night
    assert disk["held_until"] is None
    assert disk["details"]["relay"]["downgraded_from"] == "critical"
    query = sa.select(webhook_deliveries.c.event, webhook_deliveries.c.next_attempt_at)
    rows = await relay.state.storage.run_read(lambda conn: conn.execute(query).all())
    held = [r.next_attempt_at for r in rows if r.next_attempt_at >= printer["held_until"]]
    assert len(rows) == 2
    assert len(held) == 1, (rows, printer)  # the printer's notification waits for the store to open


async def test_a_held_alert_that_resolves_before_the_store_opens_wakes_nobody(
    relay: Relay,
) -> None:
    """Held at night, recovered before opening: its notification is cancelled (kept, marked,
    audited) and no recovery is sent; a held alert still failing keeps its delivery, and an
    alert notified at once is followed by its recovery."""
    from zoneinfo import ZoneInfo

    now = relay.clock()
    await patch_store(relay, {"hours": _closed_now(ZoneInfo("Asia/Shanghai"), now)})
    policy = {"outside_hours": "hold", "checks": {"cpu": {"outside_hours": "page"}}}
    assert (await set_policy(relay, "store", relay.store, policy))[0] == 200
    hook = {"scope_kind": "merchant", "scope_id": relay.merchant, "url": "http://127.0.0.1:9/h"}
    assert (await relay.post("/v1/webhooks", hook, relay.tokens["admin"]))[0] == 201
    device_id, key = await relay.enrol()
    async with Agent(relay, device_id, key) as agent:
        await policy_message(agent)
        await send_event(agent, raised(1, "p1", observed_at=now))
        await send_event(agent, raised(2, "d1", check="disk", observed_at=now))
        await send_event(agent, raised(3, "c1", check="cpu", observed_at=now))
        await send_event(agent, raised(4, "p2", state="resolved", observed_at=now + 1))
        await send_event(agent, raised(5, "c2", check="cpu", state="resolved", observed_at=now + 1))
    by_check: dict[str, Any] = {a["check"]: a for a in await alerts_of(relay)}
    assert by_check["printer"]["status"] == "resolved"  # listed: nothing is lost, only unsent
    assert by_check["disk"]["status"] == "open"
    assert by_check["disk"]["held_until"] > now
    query = sa.select(
        webhook_deliveries.c.alert_id,
        webhook_deliveries.c.event,
        webhook_deliveries.c.status,
        webhook_deliveries.c.last_error,
    )
    rows = await relay.state.storage.run_read(lambda conn: conn.execute(query).all())
    by_alert: dict[str, list[tuple[str, str]]] = {}
    for row in rows:
        by_alert.setdefault(row.alert_id, []).append((row.event, row.status))
    assert by_alert[by_check["printer"]["id"]] == [("alert.opened", "cancelled")]
    assert by_alert[by_check["disk"]["id"]] == [("alert.opened", "pending")]
    assert sorted(by_alert[by_check["cpu"]["id"]]) == [
        ("alert.opened", "pending"),
        ("alert.resolved", "pending"),
    ]
    (reason,) = [r.last_error for r in rows if r.status == "cancelled"]
    assert "resolved before the store opened" in reason
    records = [r async for r in relay.state.storage.records()]
    (resolved,) = [r for r in records if r.action == "alert.resolved" and "p2" in str(r.detail)]
    assert resolved.detail["cancelled_notifications"] == 1
    assert (await health_of(relay.state).store.delivery_counts())["cancelled"] == 1


async def patch_store(relay: Relay, body: dict[str, Any]) -> None:
    """PATCH /v1/stores/{id} as the admin."""
    from aiohttp import ClientSession

    headers = {"Authorization": f"Bearer {relay.tokens['admin']}"}
    url = f"{relay.http}/v1/stores/{relay.store}"
    async with ClientSession() as http, http.patch(url, json=body, headers=headers) as answer:
        assert answer.status == 200, await answer.text()


async def _held_world(relay: Relay, policy: dict[str, Any]) -> tuple[float, Any]:
    from zoneinfo import ZoneInfo

    now = relay.clock()
    await patch_store(relay, {"hours": _closed_now(ZoneInfo("Asia/Shanghai"), now)})
    assert (await set_policy(relay, "store", relay.store, policy))[0] == 200
    hook = {"scope_kind": "merchant", "scope_id": relay.merchant, "url": "http://127.0.0.1:9/h"}
    assert (await relay.post("/v1/webhooks", hook, relay.tokens["admin"]))[0] == 201
    return now, await relay.enrol()


async def _deliveries(relay: Relay) -> list[tuple[str, str, float]]:
    query = sa.select(
        webhook_deliveries.c.event,
        webhook_deliveries.c.status,
        webhook_deliveries.c.next_attempt_at,
    ).order_by(webhook_deliveries.c.created_at)
    rows = await relay.state.storage.run_read(lambda conn: conn.execute(query).all())
    return [(r.event, r.status, r.next_attempt_at) for r in rows]


async def test_a_held_alert_escalated_at_night_sends_what_it_held_and_its_recovery(
    relay: Relay,
) -> None:
    """Outside attack F1: the escalation went out at once; the recovery was then never sent
    and the held "opened" came at opening, after everything."""
    now, (device_id, key) = await _held_world(relay, {"outside_hours": "hold"})
    async with Agent(relay, device_id, key) as agent:
        await policy_message(agent)
        await send_event(agent, raised(1, "p1", observed_at=now))
        (alert,) = await alerts_of(relay)
        assert await health_of(relay.state).store.escalate(alert["id"], "x", now=relay.clock())
        await send_event(agent, raised(2, "p2", state="resolved", observed_at=now + 1))
    rows = await _deliveries(relay)
    assert [(e, s != "cancelled") for e, s, _ in rows] == [
        ("alert.opened", True),
        ("alert.escalated", True),
        ("alert.resolved", True),
    ]
    # all due now (or being retried), none waiting for the opening 2-3 hours away
    assert all(due < now + 3600 for _, _, due in rows), rows


async def test_a_held_alert_that_pages_after_all_releases_its_held_news_first(
    relay: Relay,
) -> None:
    """Outside attack F2: held as a warning, then critical under a policy that pages critical
    at night: the held "opened" used to arrive at opening, after the resolve."""
    policy = {"outside_hours": "hold"}
    now, (device_id, key) = await _held_world(relay, policy)
    async with Agent(relay, device_id, key) as agent:
        await policy_message(agent)
        await send_event(agent, raised(1, "p1", severity="warning", observed_at=now))
        paging = {"outside_hours": "hold", "checks": {"printer": {"outside_hours": "page"}}}
        assert (await set_policy(relay, "store", relay.store, paging))[0] == 200
        await send_event(agent, raised(2, "p2", observed_at=now + 1))
        await send_event(agent, raised(3, "p3", state="resolved", observed_at=now + 2))
    rows = await _deliveries(relay)
    assert [e for e, _, _ in rows] == ["alert.opened", "alert.updated", "alert.resolved"]
    assert all(s != "cancelled" and due < now + 3600 for _, s, due in rows), rows


async def test_a_till_time_out_of_range_is_judged_at_its_receipt_and_keeps_the_link(
    relay: Relay,
) -> None:
    """Outside attack F5: observed_at 1e300 raised OverflowError in the judgement and closed
    the till's connection; its outbox resent it forever."""
    device_id, key = await relay.enrol()
    async with Agent(relay, device_id, key) as agent:
        await policy_message(agent)
        for i, observed in enumerate((1e300, -1e300, relay.clock() + 86400)):
            answer = await send_event(agent, raised(i + 1, f"t{i}", observed_at=observed))
            assert answer == m.AlertAcknowledged(id=i + 1, duplicate=False), answer
    assert [a["check"] for a in await alerts_of(relay)] == ["printer"]


async def test_the_relays_judgement_survives_a_till_that_fills_its_details(relay: Relay) -> None:
    """Outside attack F3: 70 keys of the till's details pushed the relay's own judgement out
    of the bounded map (the alert downgraded, nothing saying so)."""
    now, (device_id, key) = await _held_world(relay, {"outside_hours": "downgrade"})
    import dataclasses

    event = dataclasses.replace(
        raised(1, "p1", observed_at=now), details={f"k{i}": i for i in range(70)}
    )
    async with Agent(relay, device_id, key) as agent:
        await policy_message(agent)
        await send_event(agent, event)
    (alert,) = await alerts_of(relay)
    assert alert["severity"] == "warning"
    assert alert["details"]["relay"]["downgraded_from"] == "critical"
