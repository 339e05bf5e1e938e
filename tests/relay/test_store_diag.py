"""``POST /v1/stores/{store_id}/diag`` (relay/handlers/fanout.py): one diagnostics request to every
active device of a store, on SQLite and PostgreSQL, with agents played by the test."""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

import pytest
import sqlalchemy as sa

from posassist.protocol import messages as m
from posassist.relay.audit import verify_store
from posassist.relay.storage import JobStatus, Scope, ScopeKind, schema
from posassist.relay.storage import Role as UserRole
from tests.relay.alerting import relay
from tests.relay.harness import _HASH, PASSWORD, Agent, Relay, start_relay

if TYPE_CHECKING:
    from pathlib import Path

    from posassist.relay.storage import Job

__all__ = ["relay"]  # the fixture: SQLite and PostgreSQL


async def _jobs(relay: Relay) -> list[Job]:
    query = sa.select(schema.jobs.c.id).order_by(schema.jobs.c.created_at, schema.jobs.c.id)
    ids = await relay.state.storage.run_read(lambda conn: conn.execute(query).scalars().all())
    return [await relay.state.storage.get_job(i) for i in ids]


async def _records(relay: Relay) -> list[tuple[str, str, str, dict[str, Any]]]:
    return [
        (r.action, str(r.outcome), r.target, dict(r.detail))
        async for r in relay.state.storage.records()
    ]


async def _answer(agent: Agent, sections: dict[str, Any]) -> m.DiagnosticsRequest:
    (request,) = await agent.next()
    assert isinstance(request, m.DiagnosticsRequest)
    await agent.reply(
        m.DiagnosticsReport(
            id=request.id, device_id=agent.device_id, collected_at=1.5, sections=sections
        )
    )
    return request


async def _user(relay: Relay, name: str, role: UserRole, scope: Scope) -> str:
    await relay.state.storage.create_user(name, _HASH, role, scope, now=relay.clock())
    status, body = await relay.post("/v1/login", {"username": name, "password": PASSWORD})
    assert status == 200, body
    return str(body["token"])


async def test_every_device_answers_once_offline_ones_are_listed_and_all_is_audited(
    relay: Relay,
) -> None:
    first, first_key = await relay.enrol()
    second, second_key = await relay.enrol()
    offline, _ = await relay.enrol()
    revoked, _ = await relay.enrol()
    await relay.state.storage.revoke_device(revoked, now=relay.clock())
    elsewhere, elsewhere_key = await relay.enrol(await relay.invite(relay.other_store))
    path = f"/v1/stores/{relay.store}/diag"
    async with (
        Agent(relay, first, first_key) as a1,
        Agent(relay, second, second_key) as a2,
        Agent(relay, elsewhere, elsewhere_key) as other,
    ):
        asked = asyncio.ensure_future(
            relay.post(path, {"collectors": ["printers"], "timeout": 5}, relay.tokens["tech"])
        )
        r1 = await _answer(a1, {"printers": {"ok": True, "data": {"note": "\x1b[31mred"}}})
        r2 = await _answer(a2, {"printers": {"ok": False, "error": {"type": "X"}}})
        status, body = await asked
        assert r1.collectors == ("printers",)
        assert r2.timeout == 5
        with pytest.raises(TimeoutError):
            await other.next(timeout=0.3)  # another store's device is not asked
    assert status == 200, body
    assert body["store_id"] == relay.store
    assert body["devices"] == 3
    results = {r["device_id"]: r for r in body["results"]}  # type: ignore[attr-defined]
    assert set(results) == {first, second, offline}  # the revoked device is not asked
    assert results[first]["status"] == "ok"
    # the agent's words as it sent them (JSON-escaped); the console makes them printable
    assert results[first]["sections"] == {"printers": {"ok": True, "data": {"note": "\x1b[31mred"}}}
    assert results[first]["collected_at"] == 1.5
    assert results[second]["sections"] == {"printers": {"ok": False, "error": {"type": "X"}}}
    assert results[offline]["status"] == "offline"
    assert "sections" not in results[offline]
    jobs = {j.id: j for j in await _jobs(relay)}
    assert {j.device_id: j.status for j in jobs.values()} == {
        first: JobStatus.SUCCEEDED,
        second: JobStatus.SUCCEEDED,
        offline: JobStatus.FAILED,
    }
    for result in results.values():
        assert jobs[result["job_id"]].device_id == result["device_id"]
        assert jobs[result["job_id"]].requested_by == "tech"
    records = await _records(relay)
    asked_records = [r for r in records if r[0] == "diag.request"]
    assert sorted(r[2] for r in asked_records) == sorted(f"device:{d}" for d in results)
    assert all(r[1] == "ok" and r[3]["store"] == relay.store for r in asked_records)
    ended = {r[2]: r for r in records if r[0] == "diag.request.finished"}
    assert ended[f"device:{first}"][1] == "ok"
    assert ended[f"device:{offline}"][1] == "failed"
    assert ended[f"device:{offline}"][3]["error"] == "offline"
    assert {e[3]["job"] for e in ended.values()} == set(jobs)
    result = await verify_store(relay.state.storage)
    assert result.ok, result.describe()


async def test_a_device_that_never_answers_times_out_and_the_rest_still_come_back(
    relay: Relay,
) -> None:
    quiet, quiet_key = await relay.enrol()
    talker, talker_key = await relay.enrol()
    async with Agent(relay, quiet, quiet_key) as silent, Agent(relay, talker, talker_key) as a:
        asked = asyncio.ensure_future(
            relay.post(f"/v1/stores/{relay.store}/diag", {"timeout": 0.5}, relay.tokens["admin"])
        )
        await _answer(a, {"system": {"ok": True}})
        (ignored,) = await silent.next()
        assert isinstance(ignored, m.DiagnosticsRequest)
        status, body = await asked
    assert status == 200, body
    statuses = {r["device_id"]: r["status"] for r in body["results"]}  # type: ignore[attr-defined]
    assert statuses == {quiet: "timeout", talker: "ok"}
    jobs = {j.device_id: j for j in await _jobs(relay)}
    assert jobs[quiet].status is JobStatus.FAILED
    assert "timeout" in str(jobs[quiet].error)
    assert jobs[talker].status is JobStatus.SUCCEEDED
    # each job ends when its device's end was known, not when the whole store's was
    answered_at, timed_out_at = jobs[talker].finished_at, jobs[quiet].finished_at
    assert answered_at is not None
    assert timed_out_at is not None
    assert answered_at < timed_out_at
    result = await verify_store(relay.state.storage)
    assert result.ok, result.describe()


async def test_a_till_can_not_pass_its_failure_off_as_the_relays_word(relay: Relay) -> None:
    # An agent's error code that is a word of the relay's (ok, offline, timeout, succeeded…)
    # comes back as agent_error with that code in the message: a till can't be counted "ok"
    # (outside attack 16, F1); any other code of the agent's comes as it is.
    ids = [await relay.enrol() for _ in range(4)]
    codes = ["ok", "offline", "succeeded", "unknown_collector"]
    async with contextlib.AsyncExitStack() as stack:
        agents = [await stack.enter_async_context(Agent(relay, d, k)) for d, k in ids]
        asked = asyncio.ensure_future(
            relay.post(f"/v1/stores/{relay.store}/diag", {"timeout": 5}, relay.tokens["tech"])
        )
        for agent, code in zip(agents, codes, strict=True):
            (request,) = await agent.next()
            assert isinstance(request, m.DiagnosticsRequest)
            await agent.reply(m.ErrorReply(id=request.id, code=code, message="x"))
        status, body = await asked
    assert status == 200, body
    results = {r["device_id"]: r for r in body["results"]}  # type: ignore[attr-defined]
    got = [(results[d]["status"], results[d]["message"]) for d, _ in ids]
    assert got == [
        ("agent_error", "ok: x"),
        ("agent_error", "offline: x"),
        ("agent_error", "succeeded: x"),
        ("unknown_collector", "x"),
    ]
    jobs = {j.device_id: j for j in await _jobs(relay)}
    assert all(jobs[d].status is JobStatus.FAILED for d, _ in ids)


async def test_a_report_with_bytes_comes_back_with_them_as_hex(relay: Relay) -> None:
    # JSON has no bytes: a report carrying some (raw printer status) is encoded the slow way,
    # each as hex; a plain one beside it goes as it came (relay/handlers/fanout.py _report_json)
    raw, raw_key = await relay.enrol()
    plain, plain_key = await relay.enrol()
    async with Agent(relay, raw, raw_key) as a1, Agent(relay, plain, plain_key) as a2:
        asked = asyncio.ensure_future(
            relay.post(f"/v1/stores/{relay.store}/diag", {"timeout": 5}, relay.tokens["tech"])
        )
        await _answer(a1, {"printers": {"ok": True, "data": {"dle_eot": b"\x12", "n": [1, b"ab"]}}})
        await _answer(a2, {"printers": {"ok": True, "data": {"n": [1, 2.5]}}})
        status, body = await asked
    assert status == 200, body
    results = {r["device_id"]: r for r in body["results"]}  # type: ignore[attr-defined]
    assert results[raw]["status"] == "ok"
    assert results[raw]["sections"] == {
        "printers": {"ok": True, "data": {"dle_eot": "12", "n": [1, "6162"]}}
    }
    assert results[plain]["sections"] == {"printers": {"ok": True, "data": {"n": [1, 2.5]}}}


async def test_a_store_out_of_scope_is_404_like_an_unknown_one_audited_and_nobody_is_asked(
    relay: Relay,
) -> None:
    elsewhere, key = await relay.enrol(await relay.invite(relay.other_store))
    async with Agent(relay, elsewhere, key) as other:
        hidden = await relay.post(f"/v1/stores/{relay.other_store}/diag", {}, relay.tokens["tech"])
        unknown = await relay.post("/v1/stores/sto_nowhere/diag", {}, relay.tokens["tech"])
        with pytest.raises(TimeoutError):
            await other.next(timeout=0.3)
    assert hidden[0] == unknown[0] == 404
    assert hidden[1]["error"] == unknown[1]["error"] == "NotFound"
    assert hidden[1]["message"] == unknown[1]["message"]
    assert await _jobs(relay) == []
    refused = [r for r in await _records(relay) if r[1] == "refused"]
    assert (
        "diag.request",
        "refused",
        f"store:{relay.other_store}",
        {"reason": "out of scope"},
    ) in refused


async def test_a_merchant_may_not_ask_and_a_viewer_may(relay: Relay) -> None:
    merchant = await _user(
        relay, "shopkeeper", UserRole.MERCHANT, Scope(ScopeKind.STORE, relay.store)
    )
    status, body = await relay.post(f"/v1/stores/{relay.store}/diag", {}, merchant)
    assert status == 403, body
    assert await _jobs(relay) == []
    assert ("diag.request", "refused", f"store:{relay.store}", {"reason": "forbidden"}) in (
        await _records(relay)
    )
    status, body = await relay.post(f"/v1/stores/{relay.store}/diag", {}, relay.tokens["viewer"])
    assert status == 200, body
    assert body["results"] == []  # no device yet: an empty answer, not an error


@pytest.mark.parametrize(
    "body",
    [
        {"collectors": "printers"},
        {"collectors": [1]},
        {"collectors": ["x"] * 33},
        {"timeout": 0},
        {"timeout": 601},
        {"timeout": "5"},
        {"timeout": True},
        {"timeout": float("nan")},
        {"device_id": "dev_x"},
        [],
    ],
)
async def test_a_bad_body_is_refused_and_nothing_is_asked_or_written(
    relay: Relay, body: object
) -> None:
    device, key = await relay.enrol()
    before = await _records(relay)
    async with Agent(relay, device, key) as agent:
        status, answer = await relay.post(
            f"/v1/stores/{relay.store}/diag", body, relay.tokens["tech"]
        )
        with pytest.raises(TimeoutError):
            await agent.next(timeout=0.2)
    assert status == 400, answer
    assert answer["error"] == "BadRequest"
    assert await _jobs(relay) == []
    assert await _records(relay) == before


async def test_past_the_rate_limit_it_is_429_audited_and_nothing_is_asked(
    tmp_path: Path,
) -> None:
    limited = await start_relay(tmp_path, console_burst=3, console_rate=0.01)
    try:
        devices = [await limited.enrol() for _ in range(3)]
        async with (
            Agent(limited, *devices[0]) as a1,
            Agent(limited, *devices[1]) as a2,
            Agent(limited, *devices[2]) as a3,
        ):
            path = f"/v1/stores/{limited.store}/diag"
            asked = asyncio.ensure_future(limited.post(path, {}, limited.tokens["tech"]))
            for agent in (a1, a2, a3):
                await _answer(agent, {"system": {"ok": True}})
            assert (await asked)[0] == 200
            status, body = await limited.post(
                path, {}, limited.tokens["tech"]
            )  # the bucket is empty
            assert status == 429, body
            for agent in (a1, a2, a3):
                with pytest.raises(TimeoutError):
                    await agent.next(timeout=0.2)
        assert len(await _jobs(limited)) == 3
        assert (
            "diag.request",
            "refused",
            f"store:{limited.store}",
            {"reason": "rate_limited"},
        ) in await _records(limited)
    finally:
        await limited.server.close()


async def test_reports_past_the_answers_cap_are_left_out_and_their_jobs_still_succeed(
    relay: Relay, monkeypatch: pytest.MonkeyPatch
) -> None:
    from posassist.relay.handlers import fanout

    monkeypatch.setattr(fanout, "MAX_ANSWER_BYTES", 3000)
    first, first_key = await relay.enrol()
    second, second_key = await relay.enrol()
    async with Agent(relay, first, first_key) as a1, Agent(relay, second, second_key) as a2:
        asked = asyncio.ensure_future(
            relay.post(f"/v1/stores/{relay.store}/diag", {}, relay.tokens["tech"])
        )
        await _answer(a1, {"log": {"ok": True, "data": "a" * 2000}})
        await _answer(a2, {"log": {"ok": True, "data": "b" * 2000}})
        status, body = await asked
    assert status == 200, body
    results = {r["device_id"]: r for r in body["results"]}  # type: ignore[attr-defined]
    # whichever report the relay read first is kept (two sockets: either may be read first)
    kept, cut = (first, second) if results[first]["sections"] is not None else (second, first)
    letter = "a" if kept == first else "b"
    assert results[kept]["sections"] == {"log": {"ok": True, "data": letter * 2000}}
    assert results[cut]["status"] == "ok"
    assert results[cut]["sections"] is None
    assert results[cut]["truncated"] is True
    jobs = await _jobs(relay)
    assert [j.status for j in jobs] == [JobStatus.SUCCEEDED, JobStatus.SUCCEEDED]


def _results(body: object) -> list[dict[str, Any]]:
    assert isinstance(body, dict)
    results = body["results"]
    assert isinstance(results, list)
    return results


async def test_the_answers_cap_counts_bytes_not_characters(
    relay: Relay, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two reports of 700 汉字 each: 1,400 characters fit 3,000, but 4,200+ bytes do not."""
    from posassist.relay.handlers import fanout

    monkeypatch.setattr(fanout, "MAX_ANSWER_BYTES", 3000)
    first, first_key = await relay.enrol()
    second, second_key = await relay.enrol()
    async with Agent(relay, first, first_key) as a1, Agent(relay, second, second_key) as a2:
        asked = asyncio.ensure_future(
            relay.post(f"/v1/stores/{relay.store}/diag", {}, relay.tokens["tech"])
        )
        await _answer(a1, {"log": {"ok": True, "data": "纸" * 700}})
        await _answer(a2, {"log": {"ok": True, "data": "墨" * 700}})
        status, body = await asked
    assert status == 200, body
    results = {r["device_id"]: r for r in body["results"]}  # type: ignore[attr-defined]
    assert results[first]["sections"] == {"log": {"ok": True, "data": "纸" * 700}}
    assert (results[second]["sections"], results[second]["truncated"]) == (None, True)
    assert relay.server.app[fanout.HELD].size == 0  # all given back once answered


async def test_reports_past_the_relay_wide_cap_come_truncated_until_others_give_back(
    relay: Relay, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two stores asked at once: the second's report would take all store diags in flight past
    MAX_HELD_BYTES, so it comes truncated (its job still succeeds); once the first store's
    answer is sent its bytes are free, and the same report is kept again."""
    from posassist.relay.handlers import fanout

    monkeypatch.setattr(fanout, "MAX_HELD_BYTES", 3000)
    held = relay.server.app[fanout.HELD]
    d1, k1 = await relay.enrol()
    d2, k2 = await relay.enrol()
    d3, k3 = await relay.enrol(await relay.invite(relay.other_store))
    report = {"log": {"ok": True, "data": "a" * 2000}}
    async with Agent(relay, d1, k1) as a1, Agent(relay, d2, k2) as a2, Agent(relay, d3, k3) as a3:
        main_st = asyncio.ensure_future(
            relay.post(f"/v1/stores/{relay.store}/diag", {}, relay.tokens["admin"])
        )
        await _answer(a1, report)  # Main St holds ~2,000 bytes, still waiting for d2
        harbour = asyncio.ensure_future(
            relay.post(f"/v1/stores/{relay.other_store}/diag", {}, relay.tokens["admin"])
        )
        await _answer(a3, report)  # would be ~4,000 held in all: truncated
        status, body = await harbour
        assert status == 200, body
        (result,) = _results(body)
        assert (result["status"], result["sections"], result["truncated"]) == ("ok", None, True)
        await _answer(a2, {"log": {"ok": True}})
        status, body = await main_st
        assert status == 200, body
        kept = {r["device_id"]: r for r in body["results"]}  # type: ignore[attr-defined]
        assert kept[d1]["sections"] == report
        assert held.size == 0
        again = asyncio.ensure_future(
            relay.post(f"/v1/stores/{relay.other_store}/diag", {}, relay.tokens["admin"])
        )
        await _answer(a3, report)
        status, body = await again
        (result,) = _results(body)
        assert result["sections"] == report
    assert held.size == 0
    jobs = await _jobs(relay)
    assert [j.status for j in jobs] == [JobStatus.SUCCEEDED] * 4
