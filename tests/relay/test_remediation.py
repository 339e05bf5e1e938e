"""Unattended remediation on a real relay (SQLite and PostgreSQL): a firing check the policy maps
to a vetted script gets it run, unattended, as a routed job; each attempt and its result is
audited and attached to the alert; once the window's attempts are spent and the check still
fails, the alert escalates (audited, notified)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from posassist.protocol import messages as m
from posassist.relay.handlers.alerts import health_of
from tests.relay.alerting import raised, relay, send_event
from tests.relay.harness import Agent, Relay
from tests.relay.test_policies import policy_message, set_policy

if TYPE_CHECKING:
    import pytest

    from posassist.relay.alerts import Alert

__all__ = ["relay"]

PLAN = {
    "remediation": {
        "print_queue": {"script": "clear-print-queue", "version": "1.0.0", "max_attempts": 2}
    }
}


async def run_request(agent: Agent) -> m.ScriptRunRequest:
    (request,) = await agent.next()
    assert isinstance(request, m.ScriptRunRequest), request
    return request


async def finish(agent: Agent, request: m.ScriptRunRequest, status: str) -> None:
    assert request.job_id is not None
    await agent.reply(
        m.ScriptFinished(
            id=request.id, job_id=request.job_id, status=status, finished_at=1.0, detail="done"
        )
    )


async def shown(relay: Relay, alert_id: str) -> dict[str, Any]:
    status, body = await relay.get(f"/v1/alerts/{alert_id}", relay.tokens["tech"])
    assert status == 200, body
    return body


async def the_alert(relay: Relay) -> Alert:
    (alert,) = await health_of(relay.state).store.list_alerts(relay_scope())
    return alert


def relay_scope() -> Any:
    from posassist.relay.storage import Scope

    return Scope.root()


async def eventually(relay: Relay, alert_id: str, condition: Any) -> None:
    """Poll the alert (the remediation runs in the background, with no event to await)."""
    async with asyncio.timeout(10):
        while not condition(await shown(relay, alert_id)):  # noqa: ASYNC110 - no event
            await asyncio.sleep(0.02)


async def attempts_ended(relay: Relay, alert_id: str, count: int) -> None:
    await eventually(
        relay,
        alert_id,
        lambda body: sum(r["status"] != "running" for r in body["remediations"]) >= count,
    )


async def test_a_failing_check_gets_its_script_then_escalates_when_still_failing(
    relay: Relay,
) -> None:
    assert (await set_policy(relay, "store", relay.store, PLAN))[0] == 200
    device_id, key = await relay.enrol()
    async with Agent(relay, device_id, key) as agent:
        await policy_message(agent)
        await send_event(agent, raised(1, "q1", check="print_queue", observed_at=1))
        first = await run_request(agent)  # unattended, under the relay's job
        assert (first.script, first.version, first.unattended) == (
            "clear-print-queue",
            "1.0.0",
            True,
        )
        await finish(agent, first, "succeeded")
        alert = await the_alert(relay)
        await attempts_ended(relay, alert.id, 1)
        # the script ran but the queue is still stuck: the check fires again
        await send_event(agent, raised(2, "q2", check="print_queue", observed_at=2))
        second = await run_request(agent)
        await finish(agent, second, "failed")
        await attempts_ended(relay, alert.id, 2)
        await eventually(relay, alert.id, lambda body: body["escalated_at"] is not None)
    body = await shown(relay, alert.id)
    assert [r["status"] for r in body["remediations"]] == ["succeeded", "failed"]
    assert all(r["job_id"] for r in body["remediations"])
    for remediation in body["remediations"]:  # each unattended run's job names its script
        job = await relay.state.storage.get_job(remediation["job_id"])
        assert (job.script, job.version) == ("clear-print-queue", "1.0.0")
    assert body["escalated_at"] is not None  # two attempts spent, still failing
    actions = [(r.action, r.outcome) async for r in relay.state.storage.records()]
    assert actions.count(("alert.remediation.start", "ok")) == 2
    assert ("alert.remediation.finish", "ok") in actions
    assert ("alert.remediation.finish", "failed") in actions
    assert actions.count(("alert.escalated", "ok")) == 1
    jobs = [a for a in actions if a[0] in ("script.run", "script.run.finished")]
    assert jobs == [
        ("script.run", "ok"),
        ("script.run.finished", "ok"),
        ("script.run", "ok"),
        ("script.run.finished", "failed"),
    ]


async def test_a_refused_run_counts_as_an_attempt_and_no_plan_runs_nothing(relay: Relay) -> None:
    assert (await set_policy(relay, "store", relay.store, PLAN))[0] == 200
    device_id, key = await relay.enrol()
    async with Agent(relay, device_id, key) as agent:
        await policy_message(agent)
        await send_event(agent, raised(1, "d1", check="disk", observed_at=1))  # no plan for disk
        await send_event(agent, raised(2, "q1", check="print_queue", observed_at=1))
        request = await run_request(agent)  # the first message since: disk ran nothing
        await agent.reply(
            m.ErrorReply(id=request.id, code="refused", message="not unattended-ok / 需要确认")
        )
        alerts = {
            a.check_name: a for a in await health_of(relay.state).store.list_alerts(relay_scope())
        }
        await attempts_ended(relay, alerts["print_queue"].id, 1)
    body = await shown(relay, alerts["print_queue"].id)
    (attempt,) = body["remediations"]
    assert attempt["status"] == "failed"
    assert "refused" in attempt["detail"]
    assert (await shown(relay, alerts["disk"].id))["remediations"] == []


async def test_an_attempt_whose_end_never_came_is_failed_and_the_next_one_runs(
    relay: Relay,
) -> None:
    from posassist.relay import remediation

    assert (await set_policy(relay, "store", relay.store, PLAN))[0] == 200
    device_id, key = await relay.enrol()
    async with Agent(relay, device_id, key) as agent:
        await policy_message(agent)
        await send_event(agent, raised(1, "q1", check="print_queue", observed_at=1))
        await run_request(agent)  # never answered: as if the relay restarted mid-run
        alert = await the_alert(relay)
        await send_event(agent, raised(2, "q2", check="print_queue", observed_at=2))
        relay.clock.offset += remediation.STALE_AFTER + 1
        await send_event(agent, raised(3, "q3", check="print_queue", observed_at=3))
        second = await run_request(agent)  # the stale one failed; the next attempt runs
        await finish(agent, second, "succeeded")
        await attempts_ended(relay, alert.id, 2)
    body = await shown(relay, alert.id)
    assert [r["status"] for r in body["remediations"]] == ["failed", "succeeded"]
    # failed by whichever saw it first: the route's expiry (outcome unknown) or the next decision
    detail = body["remediations"][0]["detail"]
    assert "no outcome within" in detail or detail.startswith("outcome_unknown")


async def test_a_firing_event_during_a_decision_is_decided_after_it_not_dropped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One decision at a time per device and check; an event that comes meanwhile is decided
    once it ends (it was dropped, and a stale attempt then waited for yet another event)."""
    import types

    from posassist.relay import remediation

    decided: list[object] = []
    started, release = asyncio.Event(), asyncio.Event()

    async def decide(state: object, health: object, alert: object) -> None:
        decided.append(alert)
        started.set()
        if len(decided) == 1:
            await release.wait()

    monkeypatch.setattr(remediation, "_decide", decide)
    health = types.SimpleNamespace(remediating={}, tasks=set())
    first, second, third = (types.SimpleNamespace(device_id="d", check_name="c") for _ in "abc")
    remediation.after_firing(None, health, first)  # type: ignore[arg-type]
    await asyncio.wait_for(started.wait(), 5)  # the first decision is under way
    remediation.after_firing(None, health, second)  # type: ignore[arg-type]
    remediation.after_firing(None, health, third)  # type: ignore[arg-type]
    assert decided == [first]
    release.set()
    async with asyncio.timeout(5):
        while health.tasks:
            await asyncio.gather(*health.tasks)
    assert decided == [first, third]  # the newest event's alert, once
    assert health.remediating == {}
