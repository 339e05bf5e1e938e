"""``POST /v1/jobs/{id}/cancel`` and the web job page's cancel button, on a real relay (SQLite and
PostgreSQL: the job's ``cancelled`` status is new in migration 0008) with an agent and a console
played by the test over real websockets (docs/protocol.md#cancel)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import pytest
from aiohttp import ClientSession, CookieJar

from posassist.protocol import messages as m
from posassist.relay.storage import JobStatus
from tests.relay.alerting import relay
from tests.relay.harness import Agent, Console, Relay
from tests.relay.test_web_console import Browser

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

__all__ = ["relay"]  # the fixture: a real relay on SQLite and on PostgreSQL


def _run(device_id: str, request_id: int = 1) -> m.ScriptRunRequest:
    return m.ScriptRunRequest(
        id=request_id, device_id=device_id, script="printer-test", version="1.0.0"
    )


async def _started(agent: Agent) -> m.ScriptRunRequest:
    """The run the agent was sent, reported started."""
    (run,) = await agent.next()
    assert isinstance(run, m.ScriptRunRequest)
    assert run.job_id is not None
    await agent.reply(m.ScriptStarted(id=run.id, job_id=run.job_id, started_at=1.0))
    return run


def _cancelled(request_id: int, job_id: str, detail: str = "cancelled on request") -> Any:
    return m.ScriptFinished(
        id=request_id,
        job_id=job_id,
        status="cancelled",
        finished_at=2.0,
        exit_code=-9,
        backup_id="bk_1",
        detail=detail,
    )


async def _nothing_more(agent: Agent) -> None:
    """The agent was sent nothing since: a heartbeat's ack is the next thing it reads."""
    await agent.reply(m.Heartbeat(seq=99, sent_at=1.0))
    (ack,) = await agent.next()
    assert isinstance(ack, m.HeartbeatAck)


async def _until_status(relay: Relay, job_id: str, status: JobStatus) -> None:
    async with asyncio.timeout(10):
        # the relay ends the job as the link closes: there is no event to wait on
        while (await relay.state.storage.get_job(job_id)).status is not status:  # noqa: ASYNC110
            await asyncio.sleep(0.02)


async def _run_end(console: Console) -> m.ScriptFinished:
    """What the run's console hears at the end (after its started and steps)."""
    async with asyncio.timeout(10):
        while True:
            for msg in await console.next():
                if isinstance(msg, m.ScriptFinished):
                    return msg


async def _audit(relay: Relay, action: str) -> list[tuple[str, str, str, dict[str, Any]]]:
    return [
        (r.actor, str(r.outcome), r.target, dict(r.detail))
        async for r in relay.state.storage.records()
        if r.action == action
    ]


async def test_a_technician_cancels_a_running_script_and_the_job_ends_cancelled(
    relay: Relay,
) -> None:
    device_id, key = await relay.enrol()
    async with Agent(relay, device_id, key) as agent, Console(relay) as console:
        await console.request(_run(device_id))
        run = await _started(agent)
        job_id = run.job_id
        assert job_id is not None
        cancel = asyncio.ensure_future(
            relay.post(f"/v1/jobs/{job_id}/cancel", {}, relay.tokens["tech"])
        )
        (asked,) = await agent.next()
        assert isinstance(asked, m.ScriptCancel)
        assert asked.job_id == job_id
        # the run ends first (under its own id), then the cancel is answered with a copy
        await agent.reply(_cancelled(run.id, job_id))
        await agent.reply(_cancelled(asked.id, job_id))
        status, body = await asyncio.wait_for(cancel, 10)
        assert status == 200, body
        assert body == {
            "job_id": job_id,
            "device_id": device_id,
            "status": "cancelled",
            "exit_code": -9,
            "backup_id": "bk_1",
            "detail": "cancelled on request",
        }
        assert (await _run_end(console)).status == "cancelled"  # its console hears the end
        job = await relay.state.storage.get_job(job_id)
        assert job.status is JobStatus.CANCELLED
        assert job.error == "cancelled: cancelled on request"
        # cancel twice: the job has ended, nothing is sent, refused and audited
        status, body = await relay.post(f"/v1/jobs/{job_id}/cancel", {}, relay.tokens["tech"])
        assert (status, body["error"]) == (409, "JobFinished")
        await _nothing_more(agent)
    records = await _audit(relay, "job.cancel")
    assert [(actor, outcome) for actor, outcome, _, _ in records] == [
        ("user:tech", "ok"),
        ("user:tech", "refused"),
    ]
    assert records[1][3]["reason"] == "finished cancelled"
    (finished,) = await _audit(relay, "job.cancel.finished")
    assert finished[1:3] == ("ok", f"job:{job_id}")
    (run_end,) = await _audit(relay, "script.run.finished")
    assert (run_end[1], run_end[3]["status"]) == ("failed", "cancelled")


async def test_a_viewer_or_another_tenants_technician_cancels_nothing(relay: Relay) -> None:
    theirs, key = await relay.enrol(await relay.invite(relay.other_store))
    async with Agent(relay, theirs, key) as agent, Console(relay, "admin") as console:
        await console.request(_run(theirs))
        run = await _started(agent)
        assert run.job_id is not None
        unknown = await relay.post("/v1/jobs/job_0123456789abcdef/cancel", {}, relay.tokens["tech"])
        other = await relay.post(f"/v1/jobs/{run.job_id}/cancel", {}, relay.tokens["tech"])
        assert other == unknown  # IDOR: exactly the answer an unknown id gets
        assert other[0] == 404
        viewer = await relay.post(f"/v1/jobs/{run.job_id}/cancel", {}, relay.tokens["viewer"])
        assert (viewer[0], viewer[1]["error"]) == (403, "ScopeError")
        nobody = await relay.post(f"/v1/jobs/{run.job_id}/cancel", {})
        assert nobody[0] == 401
        await _nothing_more(agent)  # the run goes on: no cancel reached the till
        job = await relay.state.storage.get_job(run.job_id)
        assert job.status is JobStatus.PENDING
    reasons = [
        (actor, detail["reason"]) for actor, _, _, detail in await _audit(relay, "job.cancel")
    ]
    assert reasons == [
        ("user:tech", "unknown job"),
        ("user:tech", "out of scope"),
        ("user:viewer", "role viewer"),
    ]


async def test_an_agent_older_than_version_7_is_never_sent_a_cancel(relay: Relay) -> None:
    device_id, key = await relay.enrol()
    async with (
        Agent(relay, device_id, key, versions=(1, 2, 3, 4, 5, 6)) as agent,
        Console(relay) as console,
    ):
        await console.request(_run(device_id))
        run = await _started(agent)
        status, body = await relay.post(f"/v1/jobs/{run.job_id}/cancel", {}, relay.tokens["tech"])
        assert (status, body["error"]) == (409, "AgentTooOld")
        assert "agent too old" in str(body["message"])
        await _nothing_more(agent)
    ((_, outcome, _, detail),) = await _audit(relay, "job.cancel")
    assert (outcome, detail["reason"]) == ("refused", "agent too old (protocol 6)")


async def test_a_run_that_ended_before_the_cancel_is_not_running_and_keeps_its_end(
    relay: Relay,
) -> None:
    device_id, key = await relay.enrol()
    async with Agent(relay, device_id, key) as agent, Console(relay) as console:
        await console.request(_run(device_id))
        run = await _started(agent)
        assert run.job_id is not None
        cancel = asyncio.ensure_future(
            relay.post(f"/v1/jobs/{run.job_id}/cancel", {}, relay.tokens["tech"])
        )
        (asked,) = await agent.next()
        assert isinstance(asked, m.ScriptCancel)
        ended = m.ScriptFinished(
            id=run.id, job_id=run.job_id, status="succeeded", finished_at=2.0, exit_code=0
        )
        await agent.reply(ended)
        await agent.reply(m.ErrorReply(id=asked.id, code="not_running", message="ended first"))
        status, body = await asyncio.wait_for(cancel, 10)
        assert (status, body["error"]) == (409, "NotRunning")
        assert (await relay.state.storage.get_job(run.job_id)).status is JobStatus.SUCCEEDED
        # a finished job is refused without asking the till
        status, body = await relay.post(f"/v1/jobs/{run.job_id}/cancel", {}, relay.tokens["tech"])
        assert (status, body["error"]) == (409, "JobFinished")
        await _nothing_more(agent)
        assert (await _run_end(console)).status == "succeeded"
    (finished,) = await _audit(relay, "job.cancel.finished")
    assert (finished[1], finished[3]["reason"]) == ("refused", "not_running")


async def test_a_cancel_of_an_offline_till_or_a_diagnosis_is_refused(relay: Relay) -> None:
    device_id, key = await relay.enrol()
    async with Agent(relay, device_id, key) as agent, Console(relay) as console:
        await console.request(m.DiagnosticsRequest(id=1, device_id=device_id))
        (diag,) = await agent.next()
        assert isinstance(diag, m.DiagnosticsRequest)
        jobs = await _jobs(relay, device_id)
        status, body = await relay.post(f"/v1/jobs/{jobs[0]}/cancel", {}, relay.tokens["tech"])
        assert (status, body["error"]) == (409, "NotCancellable")
        await console.request(_run(device_id, 2))
        run = await _started(agent)
    # the agent left with the run in flight: its job is unknown (the till may still run it),
    # and a cancel needs the till
    await _until_status(relay, str(run.job_id), JobStatus.UNKNOWN)
    status, body = await relay.post(f"/v1/jobs/{run.job_id}/cancel", {}, relay.tokens["tech"])
    assert (status, body["error"]) == (503, "OfflineError")


async def _cancel_asked(agent: Agent) -> m.ScriptCancel:
    """The ``script.cancel`` the till is sent, past any ``job.query`` the relay asks first about
    a job it lost track of (its reconciliation of ``unknown`` jobs runs on its own schedule)."""
    for _ in range(5):
        for message in await agent.next():
            if isinstance(message, m.ScriptCancel):
                return message
            assert isinstance(message, m.JobQuery), message
    raise AssertionError("no script.cancel reached the till")


async def test_a_cancel_reconciles_a_run_whose_console_left(relay: Relay) -> None:
    """The technician's console left (the job is ``unknown``: the till runs on); the cancel
    still stops it, and the run's late end reconciles the job ``cancelled``."""
    device_id, key = await relay.enrol()
    async with Agent(relay, device_id, key) as agent:
        async with Console(relay) as console:
            await console.request(_run(device_id))
            run = await _started(agent)
        job_id = str(run.job_id)
        await _until_status(relay, job_id, JobStatus.UNKNOWN)
        cancel = asyncio.ensure_future(
            relay.post(f"/v1/jobs/{job_id}/cancel", {}, relay.tokens["admin"])
        )
        asked = await _cancel_asked(agent)  # a job.query for the unknown job may come first
        await agent.reply(_cancelled(run.id, job_id))
        await agent.reply(_cancelled(asked.id, job_id))
        status, body = await asyncio.wait_for(cancel, 10)
        assert (status, body["status"]) == (200, "cancelled")
    assert (await relay.state.storage.get_job(job_id)).status is JobStatus.CANCELLED
    (reconciled,) = await _audit(relay, "script.run.reconciled")
    assert reconciled[3]["status"] == "cancelled"


async def test_a_till_that_does_not_answer_or_leaves_during_a_cancel(
    relay: Relay, monkeypatch: pytest.MonkeyPatch
) -> None:
    from posassist.relay.handlers import cancel

    monkeypatch.setattr(cancel, "CANCEL_TIMEOUT", 0.5)
    device_id, key = await relay.enrol()
    async with Agent(relay, device_id, key) as agent, Console(relay) as console:
        await console.request(_run(device_id))
        run = await _started(agent)
        job_id = str(run.job_id)
        status, body = await relay.post(f"/v1/jobs/{job_id}/cancel", {}, relay.tokens["tech"])
        assert (status, body["error"]) == (504, "CancelUnanswered")
        (asked,) = await agent.next()
        assert isinstance(asked, m.ScriptCancel)
        # its answer after all is dropped quietly: the link stays up, the job is untouched
        await agent.reply(_cancelled(asked.id, job_id))
        await _nothing_more(agent)
        assert (await relay.state.storage.get_job(job_id)).status is JobStatus.PENDING
        assert not relay.state.cancels
        monkeypatch.setattr(cancel, "CANCEL_TIMEOUT", 30.0)
        again = asyncio.ensure_future(
            relay.post(f"/v1/jobs/{job_id}/cancel", {}, relay.tokens["tech"])
        )
        (asked,) = await agent.next()
        assert isinstance(asked, m.ScriptCancel)
    # the till left before answering: the cancel ends at once, offline
    status, body = await asyncio.wait_for(again, 10)
    assert (status, body["error"]) == (503, "OfflineError")
    assert not relay.state.cancels
    ends = [(o, d["reason"]) for _, o, _, d in await _audit(relay, "job.cancel.finished")]
    assert ends == [("failed", "no answer"), ("failed", "offline")]


async def _jobs(relay: Relay, device_id: str) -> list[str]:
    from posassist.relay.storage import Scope
    from posassist.relay.storage.admin import AdminStore

    jobs, _ = await AdminStore(relay.state.storage).jobs_page(
        Scope.root(), limit=10, device_id=device_id
    )
    return [job.id for job in jobs]


@pytest.fixture
async def browser(relay: Relay) -> AsyncIterator[Browser]:
    async with ClientSession(cookie_jar=CookieJar(unsafe=True)) as http:
        yield Browser(relay.http, http)


async def test_the_job_page_offers_cancel_while_the_run_is_live_and_a_forged_form_does_nothing(
    relay: Relay, browser: Browser
) -> None:
    device_id, key = await relay.enrol()
    await browser.sign_in("tech")
    csrf = await browser.csrf()
    async with Agent(relay, device_id, key) as agent, Console(relay) as console:
        await console.request(_run(device_id))
        run = await _started(agent)
        job_url = f"/jobs/{run.job_id}"
        _, page, _ = await browser.get(job_url)
        assert f'action="{job_url}/cancel"' in page
        assert "取消运行" in page
        status, _, _ = await browser.post(job_url + "/cancel", {"csrf": "forged"})
        assert status == 403
        status, _, _ = await browser.post(
            job_url + "/cancel", {"csrf": csrf}, headers={"Origin": "https://evil.example"}
        )
        assert status == 403
        await _nothing_more(agent)  # neither forged form reached the till
        # another store's live run, from the same technician's page: 404 as for no such job
        theirs, their_key = await relay.enrol(await relay.invite(relay.other_store))
        async with Agent(relay, theirs, their_key) as their_agent, Console(relay, "admin") as adm:
            await adm.request(_run(theirs))
            their_run = await _started(their_agent)
            status, page, _ = await browser.post(f"/jobs/{their_run.job_id}/cancel", {"csrf": csrf})
            unknown, unknown_page, _ = await browser.post(
                "/jobs/job_00000000000000000000/cancel", {"csrf": csrf}
            )
            assert status == unknown == 404
            assert page.replace(str(their_run.job_id), "") == unknown_page.replace(
                "job_00000000000000000000", ""
            )
            await _nothing_more(their_agent)
        async with ClientSession(cookie_jar=CookieJar(unsafe=True)) as http:
            viewer = Browser(relay.http, http)
            await viewer.sign_in("viewer")
            _, page, _ = await viewer.get(job_url)
            assert "/cancel" not in page  # a viewer sees the live run, and no button
        posted = asyncio.ensure_future(browser.post(job_url + "/cancel", {"csrf": csrf}))
        (asked,) = await agent.next()
        assert isinstance(asked, m.ScriptCancel)
        await agent.reply(_cancelled(run.id, str(run.job_id)))
        await agent.reply(_cancelled(asked.id, str(run.job_id)))
        status, _, response = await asyncio.wait_for(posted, 10)
        assert (status, response.headers["Location"]) == (303, job_url)
        assert (await _run_end(console)).status == "cancelled"
    _, page, _ = await browser.get(job_url)
    assert "已取消" in page
    assert "/cancel" not in page  # the button is gone once the run has ended
    outcomes = [
        (o, d.get("via"), d.get("reason")) for _, o, _, d in await _audit(relay, "job.cancel")
    ]
    assert outcomes == [
        ("refused", None, "out of scope"),
        ("refused", None, "unknown job"),
        ("ok", "web", None),
    ]
