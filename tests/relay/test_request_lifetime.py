"""Requests live as long as their work, and the audit chain ends with what really happened
(docs/protocol.md#requests): over a real relay with agents and consoles played by the test.

The relay's clock is moved rather than slept on: a route's deadline is relay time.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest

from posassist.protocol import SessionState
from posassist.protocol import messages as m
from posassist.relay.audit import verify_store
from posassist.relay.connection import WebSocketSession
from posassist.relay.storage import JobStatus
from tests.relay.harness import Agent, Console, Relay, start_relay, wait_until

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

REQUEST_TIMEOUT = 2.0


@pytest.fixture
async def relay(tmp_path: Path) -> AsyncIterator[Relay]:
    relay = await start_relay(tmp_path, request_timeout=REQUEST_TIMEOUT)
    try:
        yield relay
    finally:
        await relay.server.close()


async def _records(relay: Relay) -> list:  # type: ignore[type-arg]
    return [r async for r in relay.state.storage.records()]


async def _only_job(relay: Relay, kind: str = "%"):  # type: ignore[no-untyped-def]
    rows = await relay.state.storage.run_read(
        lambda conn: conn.exec_driver_sql("SELECT id FROM jobs WHERE kind LIKE ?", (kind,)).all()
    )
    (job_id,) = [row[0] for row in rows]
    return await relay.state.storage.get_job(job_id)


async def _chain_ok(relay: Relay) -> None:
    result = await verify_store(relay.state.storage)
    assert result.ok, result.describe()


def _progress(rid: int, step: str, **detail: object) -> m.ScriptProgress:
    return m.ScriptProgress(id=rid, job_id="j", step=step, at=1.0, detail=detail)


def _finished(rid: int, status: str = "succeeded") -> m.ScriptFinished:
    return m.ScriptFinished(
        id=rid, job_id="j", status=status, finished_at=2.0, exit_code=0, backup_id="bk-1"
    )


async def _run(relay: Relay, console: Console, agent: Agent, device_id: str) -> m.ScriptRunRequest:
    """The console asks for a run (with a job id of its own, never trusted); the agent gets it."""
    await console.request(
        m.ScriptRunRequest(
            id=7, device_id=device_id, script="pos-restart", version="1", job_id="job_forged"
        )
    )
    (request,) = await agent.next()
    assert isinstance(request, m.ScriptRunRequest)
    return request


async def test_consent_answered_after_three_request_timeouts_keeps_the_route(relay: Relay) -> None:
    device_id, key = await relay.enrol()
    async with Agent(relay, device_id, key) as agent, Console(relay) as console:
        request = await _run(relay, console, agent, device_id)
        job = await _only_job(relay)
        assert request.job_id == job.id  # the relay's job id, not the console's
        rid = request.id
        await agent.reply(_progress(rid, "verified", risk="low"))
        await agent.reply(_progress(rid, "consent_asked", timeout=120.0, script="pos-restart"))
        for _ in range(2):
            assert isinstance((await console.next())[0], m.ScriptProgress)
        # the merchant takes three request timeouts to answer: the route holds
        relay.clock.offset += 3 * REQUEST_TIMEOUT
        assert relay.state.router.expire(relay.clock()) == []
        assert relay.state.router.routes_in_flight == 1
        await agent.reply(_progress(rid, "consent_answered", decision="granted"))
        await agent.reply(m.ScriptStarted(id=rid, job_id=job.id, started_at=3.0))
        relay.clock.offset += 0.9 * REQUEST_TIMEOUT  # each reply moves the deadline again
        await agent.reply(
            m.ScriptOutput(id=rid, job_id=job.id, seq=0, stream="stdout", data=b"restarted\n")
        )
        relay.clock.offset += 0.9 * REQUEST_TIMEOUT
        assert relay.state.router.expire(relay.clock()) == []
        await agent.reply(_finished(rid))
        seen: list[m.Message] = []
        while not seen or not isinstance(seen[-1], m.ScriptFinished):
            seen += await console.next()
        assert [msg.TAG for msg in seen] == [
            "script.progress",
            "script.started",
            "script.output",
            "script.finished",
        ]
    job = await _only_job(relay)
    assert (job.status, job.error) == (JobStatus.SUCCEEDED, None)
    actions = [(r.action, str(r.outcome)) for r in await _records(relay)]
    assert actions[-5:] == [
        ("script.run", "ok"),
        ("script.run.verified", "ok"),
        ("script.run.consent_asked", "ok"),
        ("script.run.consent_answered", "ok"),
        ("script.run.finished", "ok"),
    ]
    await _chain_ok(relay)


async def test_a_consent_wait_is_bounded_by_the_relays_maximum(relay: Relay) -> None:
    assert relay.state.router.max_consent_timeout == 900.0  # type: ignore[attr-defined]
    relay.state.router.max_consent_timeout = 5.0  # type: ignore[attr-defined]
    device_id, key = await relay.enrol()
    async with Agent(relay, device_id, key) as agent, Console(relay) as console:
        request = await _run(relay, console, agent, device_id)
        await agent.reply(_progress(request.id, "consent_asked", timeout=86400.0))
        await console.next()
        relay.clock.offset += 5.0 + REQUEST_TIMEOUT - 0.5
        assert relay.state.router.expire(relay.clock()) == []
        relay.clock.offset += 1.0
        (error,) = await console.next()
        assert isinstance(error, m.ErrorReply)
        assert (error.id, error.code) == (7, "outcome_unknown")


async def test_an_expired_route_is_unknown_then_reconciled_after_the_agent_reconnects(
    relay: Relay,
) -> None:
    device_id, key = await relay.enrol()
    async with Console(relay) as console:
        async with Agent(relay, device_id, key) as agent:
            request = await _run(relay, console, agent, device_id)
            job_id = request.job_id
            await agent.reply(m.ScriptStarted(id=request.id, job_id=str(job_id), started_at=1.0))
            await console.next()
            relay.clock.offset += REQUEST_TIMEOUT + 0.5  # the agent goes quiet
            (error,) = await console.next()
            assert isinstance(error, m.ErrorReply)
            assert error.code == "outcome_unknown"
            assert "结果未知" in error.message
            assert "outcome unknown" in error.message
            job = await _only_job(relay)
            assert job.status is JobStatus.UNKNOWN
            assert relay.state.router.orphans == 1
        # the connection drops before the script's end is reported; the agent comes back
        await wait_until(lambda: relay.state.router.agent(device_id) is None)
        assert relay.state.router.orphans == 0
        async with Agent(relay, device_id, key) as agent:
            (query,) = await agent.next()
            assert query == m.JobQuery(id=query.id, job_ids=(str(job_id),))  # type: ignore[attr-defined]
            result = {
                "job_id": job_id,
                "status": "failed",
                "exit_code": 3,
                "finished_at": 9.0,
                "backup_id": "bk-9",
                "detail": "printer still offline",
            }
            await agent.reply(m.JobResults(id=query.id, results=(result,)))  # type: ignore[attr-defined]
            await wait_until(lambda: _status(relay) is not JobStatus.UNKNOWN)
        # the console is told nothing more: it was told the outcome is unknown
        assert console.ws is not None
        assert console.ws.state.name == "OPEN"
    job = await _only_job(relay)
    assert (job.status, job.error) == (JobStatus.FAILED, "failed: printer still offline")
    records = await _records(relay)
    finished, reconciled = records[-2:]
    assert (finished.action, str(finished.outcome)) == ("script.run.finished", "unknown")
    assert (reconciled.action, str(reconciled.outcome)) == ("script.run.reconciled", "failed")
    assert reconciled.detail["job"] == job_id
    assert reconciled.detail["exit_code"] == 3
    assert reconciled.detail["backup_id"] == "bk-9"
    assert reconciled.actor == "user:tech"
    await _chain_ok(relay)


_STATUS: dict[str, JobStatus] = {}


def _status(relay: Relay) -> JobStatus | None:
    return _STATUS.get("last")


@pytest.fixture(autouse=True)
def _track_status(relay: Relay, monkeypatch: pytest.MonkeyPatch) -> None:
    # wait_until polls plain state: record each reconciliation's status as it commits
    _STATUS.clear()
    storage = relay.state.storage
    original = storage.reconcile_job

    async def reconcile_job(job_id: str, status: JobStatus, **kwargs: object):  # type: ignore[no-untyped-def]
        job = await original(job_id, status, **kwargs)  # type: ignore[arg-type]
        _STATUS["last"] = job.status
        return job

    monkeypatch.setattr(storage, "reconcile_job", reconcile_job)


async def test_a_late_final_report_on_the_same_connection_reconciles_at_once(
    relay: Relay,
) -> None:
    device_id, key = await relay.enrol()
    async with Agent(relay, device_id, key) as agent, Console(relay) as console:
        request = await _run(relay, console, agent, device_id)
        relay.clock.offset += REQUEST_TIMEOUT + 0.5
        (error,) = await console.next()
        assert error.code == "outcome_unknown"  # type: ignore[attr-defined]
        # the script ran after all: its steps are still audited, its end reconciles the job
        await agent.reply(_progress(request.id, "backup_made", backup_id="bk-1"))
        await agent.reply(_finished(request.id))
        await wait_until(lambda: _status(relay) is JobStatus.SUCCEEDED)
        assert relay.state.router.orphans == 0
        # the agent's connection is whole (no UnknownReply) and serves the next request
        await console.request(m.DiagnosticsRequest(id=8, device_id=device_id))
        (diag,) = await agent.next()
        assert isinstance(diag, m.DiagnosticsRequest)
    actions = [
        (r.action, str(r.outcome))
        for r in await _records(relay)
        if r.action.startswith("script.run")
    ]
    assert actions[-3:] == [
        ("script.run.finished", "unknown"),
        ("script.run.backup_made", "ok"),
        ("script.run.reconciled", "ok"),
    ]
    await _chain_ok(relay)


async def test_an_agent_that_disconnects_mid_run_leaves_it_unknown_and_a_v2_agent_is_not_asked(
    relay: Relay,
) -> None:
    device_id, key = await relay.enrol()
    async with Console(relay) as console:
        async with Agent(relay, device_id, key, versions=(1, 2)) as agent:
            request = await _run(relay, console, agent, device_id)
            assert request.job_id is None  # a v2 agent would refuse the field: not sent
        (error,) = await console.next()
        assert error.code == "outcome_unknown"  # type: ignore[attr-defined]
        async with Agent(relay, device_id, key, versions=(1, 2)) as agent:
            # no job.query for it: the next thing it hears is the console's next request
            await console.request(m.DiagnosticsRequest(id=9, device_id=device_id))
            (diag,) = await agent.next()
            assert isinstance(diag, m.DiagnosticsRequest)
    job = await _only_job(relay, "script.run")
    assert job.status is JobStatus.UNKNOWN
    await _chain_ok(relay)


async def test_a_job_the_agent_never_received_fails_as_never_delivered(relay: Relay) -> None:
    device_id, key = await relay.enrol()
    other_device, _ = await relay.enrol()
    async with Console(relay) as console:
        async with Agent(relay, device_id, key) as agent:
            request = await _run(relay, console, agent, device_id)
            forgotten = await relay.state.storage.create_job(
                device_id, "script.run", "tech", now=relay.clock()
            )
            await relay.state.storage.finish_job(forgotten.id, JobStatus.UNKNOWN, now=relay.clock())
        await console.next()
        async with Agent(relay, device_id, key) as agent:
            (query,) = await agent.next()
            assert isinstance(query, m.JobQuery)
            assert set(query.job_ids) == {request.job_id, forgotten.id}
            other_job = await relay.state.storage.create_job(
                other_device, "script.run", "tech", now=relay.clock()
            )
            await relay.state.storage.finish_job(other_job.id, JobStatus.UNKNOWN, now=relay.clock())
            blank = {"exit_code": None, "finished_at": None, "backup_id": None, "detail": ""}
            results = (
                # another device's job can't be touched from here
                {"job_id": other_job.id, "status": "succeeded", **blank},
                {"job_id": "job_nonexistent", "status": "succeeded", **blank},
                # received, but its result is no longer kept: proves nothing, stays unknown
                {"job_id": forgotten.id, "status": "unknown", **blank},
                # the till's receipts log proves the request never reached it
                {"job_id": request.job_id, "status": "never_received", **blank},
            )
            await agent.reply(m.JobResults(id=query.id, results=results))
            await _settled(agent)
    mine = await relay.state.storage.get_job(str(request.job_id))
    assert (mine.status, mine.error) == (
        JobStatus.FAILED,
        "never_delivered: the device never received this job",
    )
    assert (await relay.state.storage.get_job(forgotten.id)).status is JobStatus.UNKNOWN
    assert (await relay.state.storage.get_job(other_job.id)).status is JobStatus.UNKNOWN
    reconciled = [r for r in await _records(relay) if r.action == "script.run.reconciled"]
    assert [(r.detail["job"], str(r.outcome)) for r in reconciled] == [(request.job_id, "failed")]
    await _chain_ok(relay)


async def test_a_job_still_running_is_asked_about_at_every_heartbeat_until_it_ends(
    relay: Relay,
) -> None:
    device_id, key = await relay.enrol()
    async with Console(relay) as console:
        async with Agent(relay, device_id, key) as agent:
            request = await _run(relay, console, agent, device_id)
        await console.next()
        job_id = str(request.job_id)
        blank = {"exit_code": None, "finished_at": None, "backup_id": None, "detail": ""}
        async with Agent(relay, device_id, key) as agent:
            (query,) = await agent.next()
            assert isinstance(query, m.JobQuery)
            running = {"job_id": job_id, "status": "running", **blank}
            await agent.reply(m.JobResults(id=query.id, results=(running,)))
            for seq in (1, 2):
                # each heartbeat brings the question again while the script still runs
                seen = await _settled(agent, seq)
                if not any(isinstance(msg, m.JobQuery) for msg in seen):
                    seen += await agent.next()
                ack, again = seen
                assert isinstance(ack, m.HeartbeatAck)
                assert isinstance(again, m.JobQuery)
                assert again.job_ids == (job_id,)
                assert (await relay.state.storage.get_job(job_id)).status is JobStatus.UNKNOWN
                if seq == 1:
                    await agent.reply(m.JobResults(id=again.id, results=(running,)))
            # the second question is not answered yet: the next heartbeat doesn't ask twice
            assert [msg.TAG for msg in await _settled(agent, seq=3)] == ["heartbeat.ack"]
            done = {**running, "status": "succeeded", "exit_code": 0, "finished_at": 9.0}
            assert isinstance(again, m.JobQuery)
            await agent.reply(m.JobResults(id=again.id, results=(done,)))
            # (a second question at seq 3 would have come after its ack, so before this one)
            assert [msg.TAG for msg in await _settled(agent, seq=4)] == ["heartbeat.ack"]
            assert (await relay.state.storage.get_job(job_id)).status is JobStatus.SUCCEEDED
            # answered: nothing more to ask (a query would come before this ack's successor)
            assert [msg.TAG for msg in await _settled(agent, seq=5)] == ["heartbeat.ack"]
            assert [msg.TAG for msg in await _settled(agent, seq=6)] == ["heartbeat.ack"]
    await _chain_ok(relay)


RESERVED = ("job", "user", "agent", "status", "error", "elapsed_ms", "actor", "action", "seq")


async def test_an_agent_cannot_set_the_relays_audit_fields(relay: Relay) -> None:
    device_id, key = await relay.enrol()
    forged = {name: "forged" for name in RESERVED}
    async with Agent(relay, device_id, key) as agent, Console(relay) as console:
        request = await _run(relay, console, agent, device_id)
        job = await _only_job(relay)
        await agent.reply(_progress(request.id, "verified", **forged))
        await agent.reply(
            m.ScriptFinished(
                id=request.id,
                job_id="forged",
                status="succeeded",
                finished_at=1.0,
                detail="user=forged job=forged",
            )
        )
        while not isinstance((await console.next())[-1], m.ScriptFinished):
            pass
    records = await _records(relay)
    verified = next(r for r in records if r.action == "script.run.verified")
    assert verified.detail == {"job": job.id, "user": "tech", "agent": forged}
    assert (verified.actor, verified.target) == (f"device:{device_id}", f"device:{device_id}")
    finished = records[-1]
    assert finished.action == "script.run.finished"
    assert (finished.detail["job"], finished.detail["status"]) == (job.id, "succeeded")
    assert finished.actor == "user:tech"
    await _chain_ok(relay)


async def test_a_request_meeting_a_closing_agent_is_answered_offline_and_audited(
    relay: Relay, monkeypatch: pytest.MonkeyPatch
) -> None:
    device_id, key = await relay.enrol()
    async with Agent(relay, device_id, key), Console(relay) as console:
        link = relay.state.router.agent(device_id)
        assert isinstance(link, WebSocketSession)
        release = asyncio.Event()
        close_ws = link.ws.close

        async def held_close(**kwargs: object) -> bool:
            await release.wait()
            return await close_ws(**kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(link.ws, "close", held_close)
        closing = asyncio.ensure_future(link.close(4003, "device revoked"))
        try:
            await wait_until(lambda: link.session.state is SessionState.CLOSED)
            assert relay.state.router.agent(device_id) is link  # still attached, but closing
            await console.request(m.DiagnosticsRequest(id=1, device_id=device_id))
            (answer,) = await console.next()
            assert isinstance(answer, m.ErrorReply)
            assert (answer.id, answer.code) == (1, "offline")
            # the console is not closed: it is still served
            await console.request(m.Heartbeat(seq=1, sent_at=1.0))
            (ack,) = await console.next()
            assert isinstance(ack, m.HeartbeatAck)
        finally:
            release.set()
            await closing
    job = await _only_job(relay)
    assert (job.status, job.error) == (JobStatus.FAILED, "offline")
    actions = [(r.action, str(r.outcome)) for r in await _records(relay)]
    assert ("diag.request.finished", "failed") in actions
    await _chain_ok(relay)


async def test_a_session_closed_during_the_handshake_ends_quietly(
    relay: Relay, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # What the fuzz run hit as "cannot send auth.accepted on a closed session": the relay side
    # of the connection is closed while the device is being checked.
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    from posassist.protocol import Session
    from posassist.relay.handlers import agents
    from tests.relay.harness import agent_handshake

    device_id, key = await relay.enrol()
    sessions: list[Session] = []
    real_check = agents._check_device

    def recording_session(*args: object, **kwargs: object) -> Session:
        sessions.append(Session(*args, **kwargs))  # type: ignore[arg-type]
        return sessions[-1]

    async def check_then_close(*args: object) -> str | None:
        code = await real_check(*args)  # type: ignore[arg-type]
        sessions[-1].close()
        return code

    monkeypatch.setattr(agents, "Session", recording_session)
    monkeypatch.setattr(agents, "_check_device", check_then_close)
    caplog.set_level("INFO", logger="posassist.relay")
    async with connect(relay.ws + "/v1/agent", close_timeout=1) as ws:
        with pytest.raises(ConnectionClosed) as info:
            await agent_handshake(ws, device_id, key)
    assert info.value.rcvd is not None
    assert info.value.rcvd.code != 1011
    assert "connection closed during the handshake" in caplog.text
    assert "Traceback" not in caplog.text
    assert relay.state.router.agent(device_id) is None


async def _settled(agent: Agent, seq: int = 1) -> list[m.Message]:
    """The relay handles an agent's frames in order: once this heartbeat's ack is back,
    everything the agent sent before it (steps, the end, its audit records) has been handled.
    Returns what the relay sent up to that ack, the ack included."""
    await agent.reply(m.Heartbeat(seq=seq, sent_at=1.0))
    seen: list[m.Message] = []
    while not any(isinstance(msg, m.HeartbeatAck) and msg.seq == seq for msg in seen):
        seen += await agent.next()
    return seen


async def test_a_console_gone_mid_script_leaves_it_unknown_then_its_end_reconciles(
    relay: Relay,
) -> None:
    device_id, key = await relay.enrol()
    async with Agent(relay, device_id, key) as agent:
        async with Console(relay) as console:
            request = await _run(relay, console, agent, device_id)
            await agent.reply(m.ScriptStarted(id=request.id, job_id="j", started_at=1.0))
            await console.next()
        # the console left; the till doesn't care: the script runs on
        await wait_until(lambda: relay.state.router.orphans == 1)
        job = await _only_job(relay)
        assert job.status is JobStatus.UNKNOWN
        assert (job.error or "").startswith("outcome_unknown: the console disconnected")
        await agent.reply(_progress(request.id, "backup_made", backup_id="bk-1"))
        await agent.reply(_finished(request.id, "failed"))
        await _settled(agent)
        assert relay.state.router.orphans == 0
    job = await _only_job(relay)
    assert job.status is JobStatus.FAILED
    actions = [(r.action, str(r.outcome)) for r in await _records(relay)]
    assert actions[-4:] == [
        ("script.run", "ok"),
        ("script.run.finished", "unknown"),
        ("script.run.backup_made", "ok"),
        ("script.run.reconciled", "failed"),
    ]
    await _chain_ok(relay)


async def test_the_stated_run_timeout_holds_a_silent_running_script(relay: Relay) -> None:
    device_id, key = await relay.enrol()
    async with Agent(relay, device_id, key) as agent, Console(relay) as console:
        request = await _run(relay, console, agent, device_id)
        rid = request.id
        await agent.reply(_progress(rid, "verified", risk="A", run_timeout=30.0))
        await agent.reply(m.ScriptStarted(id=rid, job_id="j", started_at=1.0))
        await _settled(agent)
        # the script is silent for ten request timeouts, inside its own run timeout
        relay.clock.offset += 10 * REQUEST_TIMEOUT
        assert relay.state.router.expire(relay.clock()) == []
        await agent.reply(_finished(rid))
        seen: list[m.Message] = []
        while not seen or not isinstance(seen[-1], m.ScriptFinished):
            seen += await console.next()
    job = await _only_job(relay)
    assert job.status is JobStatus.SUCCEEDED
    await _chain_ok(relay)


async def test_a_flood_of_steps_is_audited_up_to_the_cap_and_counted(relay: Relay) -> None:
    from posassist.relay.routing import MAX_AUDITED_STEPS

    flood = MAX_AUDITED_STEPS + 36
    device_id, key = await relay.enrol()
    async with Agent(relay, device_id, key) as agent, Console(relay) as console:
        request = await _run(relay, console, agent, device_id)
        for n in range(flood):
            await agent.reply(_progress(request.id, "backup_made", n=n))
        await agent.reply(_finished(request.id))
        await _settled(agent)
        seen: list[m.Message] = []
        while not seen or not isinstance(seen[-1], m.ScriptFinished):
            seen += await console.next()
        assert len(seen) == flood + 1  # the technician still sees every step
    records = await _records(relay)
    steps = [r for r in records if r.action == "script.run.backup_made"]
    assert len(steps) == MAX_AUDITED_STEPS
    assert [r.detail["agent"]["n"] for r in steps] == list(range(MAX_AUDITED_STEPS))
    finished = records[-1]
    assert finished.action == "script.run.finished"
    assert finished.detail["steps_not_audited"] == 36
    await _chain_ok(relay)
