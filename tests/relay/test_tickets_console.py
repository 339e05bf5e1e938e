"""The console's ticket commands (``posassist tickets``, ``ticket …``, ``report``, ``run
--ticket``) against a real relay, and the jobs, consent and backups a ticket's record shows."""

from __future__ import annotations

import asyncio
import json
import re
from typing import TYPE_CHECKING

from posassist.console.__main__ import main
from posassist.protocol import messages as m
from posassist.relay.handlers.tickets import sweep_breaches
from tests.relay.harness import PASSWORD, Agent, Console, Relay
from tests.relay.test_tickets import ask_help, call
from tests.relay.test_tickets import relay as relay

if TYPE_CHECKING:
    from pathlib import Path

    import pytest


async def console(
    relay: Relay,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    user: str,
    *argv: str,
) -> tuple[int, str, str]:
    home = tmp_path / f"home-{user}"
    home.mkdir(exist_ok=True)
    (home / "session.json").write_text(
        json.dumps({"relay": relay.ws, "token": relay.tokens[user], "user": user})
    )
    monkeypatch.setenv("POSASSIST_HOME", str(home))
    capsys.readouterr()
    code = await asyncio.to_thread(main, list(argv))  # the console runs its own event loop
    out, err = capsys.readouterr()
    return code, out, err


async def test_a_technician_works_a_ticket_from_the_console(
    relay: Relay,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    def run(user: str, *argv: str) -> asyncio.Future[tuple[int, str, str]]:
        return asyncio.ensure_future(console(relay, tmp_path, monkeypatch, capsys, user, *argv))

    device_id, key = await relay.enrol()
    async with Agent(relay, device_id, key) as agent:
        opened = await ask_help(agent, description="打印机不出纸\n第二行")
        code = opened.support_code
        status, listing, _ = await run("tech", "tickets")
        assert status == 0
        assert code in listing
        assert "new / 新工单" in listing
        assert "Main St" in listing  # the store by its name (one table helper, console/render.py)
        assert relay.store not in listing
        status, shown, _ = await run("tech", "ticket", "show", code.lower())
        assert status == 0
        assert "    打印机不出纸\n    第二行" in shown
        assert "printer.paper_out" in shown
        status, out, _ = await run("tech", "ticket", "accept", code)
        assert (status, "accepted / 已接单" in out) == (0, True)
        status, _, err = await run("tech2", "ticket", "accept", code)
        assert status != 0
        assert f"ticket {code} is accepted (tech)" in err  # the loser is told who has it
        status, out, _ = await run(
            "tech", "ticket", "note", code, "请换纸后重试", "--state", "waiting_merchant"
        )
        assert "waiting for the merchant" in out
        (pushed,) = await agent.next()
        (pushed,) = await agent.next()
        assert isinstance(pushed, m.TicketUpdated)
        assert pushed.status == "waiting_merchant"
        status, out, _ = await run(
            "tech", "run", device_id, "s", "--version", "1", "--ticket", "ZZZZ-ZZZZ"
        )
        assert status != 0  # an unknown ticket: nothing runs
        status, out, _ = await run("tech", "ticket", "resolve", code, "--note", "已换纸")
        assert "resolved / 已解决" in out
        status, listing, _ = await run("tech", "tickets", "--state", "resolved", "--breached")
        assert code not in listing  # no SLA, so never breached
        html, data = tmp_path / "report.html", tmp_path / "report.json"
        status, out, _ = await run(
            "boss",
            "report",
            "--store",
            relay.store,
            "--since",
            "2000-01-01",
            "--html",
            str(html),
            "--json",
            str(data),
        )
        assert status == 0, out
        assert code in html.read_text()
        report = json.loads(data.read_text())
        assert report["summary"]["tickets"] == 1
        status, out, _ = await run("boss", "report", "--store", relay.store)  # no file: words
        assert status == 0
        assert re.search(r"^tickets / 工单 +1$", out, re.MULTILINE), out
        assert "--html FILE" in out
        assert "{" not in out  # a summary in words, not a JSON dump
        status, _, err = await run("boss", "ticket", "accept", code)
        assert status == 3  # refused: a merchant may not work tickets
        assert "只有技术员和管理员可以处理工单" in err  # and told so, not a bare "not permitted"
        status, _, err = await run("tech", "ticket", "show", "ZZZZ-ZZZZ")
        assert status == 2
        assert "no ticket ZZZZ-ZZZZ that you may see" in err
        status, out, _ = await run(
            "tech",
            "ticket",
            "open",
            "--store",
            relay.store,
            "--description",
            "客户来电：抽屉打不开",
            "--category",
            "cash_drawer",
            "--contact",
            "13800138000",
        )
        assert status == 0
        assert "support code / 服务码" in out
    status, listed = await call(relay, "GET", "/v1/tickets", "tech")
    phone = next(t for t in listed["tickets"] if t["channel"] == "phone")
    assert (phone["status"], phone["technician"], phone["category"]) == (
        "accepted",
        "tech",
        "cash_drawer",
    )


async def test_jobs_run_while_a_ticket_is_open_are_on_its_record_with_consent_and_backups(
    relay: Relay,
) -> None:
    device_id, key = await relay.enrol()
    async with Agent(relay, device_id, key) as agent, Console(relay) as tech:
        opened = await ask_help(agent)
        code = opened.support_code
        await call(relay, "POST", f"/v1/tickets/{code}/accept", "tech")
        status, body = await call(relay, "POST", f"/v1/tickets/{code}/work", "tech", {})
        assert (status, body["status"]) == (200, "in_progress")
        await agent.next()
        await agent.next()
        # one run the merchant refused, one that made a backup and succeeded
        for decision, run_id in (("denied", 1), ("granted", 2)):
            await tech.request(
                m.ScriptRunRequest(
                    id=run_id, device_id=device_id, script="printer-status-test", version="1.0.0"
                )
            )
            (request,) = await agent.next()
            assert isinstance(request, m.ScriptRunRequest)
            job = request.job_id
            assert job is not None
            replies: list[m.Message] = [
                m.ScriptProgress(
                    id=request.id, job_id=job, step="consent_asked", at=1.0, detail={"timeout": 120}
                ),
                m.ScriptProgress(
                    id=request.id,
                    job_id=job,
                    step="consent_answered",
                    at=2.0,
                    detail={"decision": decision, "answered_by": "cashier"},
                ),
            ]
            if decision == "denied":
                replies.append(
                    m.ScriptFinished(
                        id=request.id,
                        job_id=job,
                        status="refused",
                        finished_at=3.0,
                        detail="商户拒绝",
                    )
                )
            else:
                replies += [
                    m.ScriptProgress(
                        id=request.id,
                        job_id=job,
                        step="backup_made",
                        at=3.0,
                        detail={"backup_id": "bk-1"},
                    ),
                    m.ScriptFinished(
                        id=request.id,
                        job_id=job,
                        status="succeeded",
                        finished_at=4.0,
                        exit_code=0,
                        backup_id="bk-1",
                    ),
                ]
            for reply in replies:
                await agent.reply(reply)
            while True:
                answers = await tech.next()
                if any(isinstance(a, m.ScriptFinished) for a in answers):
                    break
        status, shown = await call(relay, "GET", f"/v1/tickets/{code}", "tech")
    jobs = shown["jobs"]
    assert [(j["script"], j["status"]) for j in jobs] == [
        ("printer-status-test", "failed"),
        ("printer-status-test", "succeeded"),
    ]
    assert [c["decision"] for j in jobs for c in j["consent"]] == ["denied", "granted"]
    assert jobs[1]["backups"] == ["bk-1"]
    assert all(a["hash"] and a["seq"] for j in jobs for a in j["audit"])
    status, report = await call(relay, "GET", f"/v1/reports?store={relay.store}", "boss")
    assert report["summary"]["consent"] == {"denied": 1, "granted": 1}
    assert report["summary"]["backups"] == 1
    status, page = await call(relay, "GET", f"/v1/reports?store={relay.store}&format=html", "boss")
    assert "未运行 / refused: 商户拒绝" in page  # not "failed": the merchant said no
    assert "商户拒绝 / denied (cashier)" in page
    assert "runs</th><td>未运行 / refused 1 · 成功 / succeeded 1" in page
    assert "consent</th><td>商户拒绝 / denied 1 · 商户同意 / approved 1" in page


async def test_what_an_agent_says_of_a_run_is_escaped_in_the_report(relay: Relay) -> None:
    device_id, key = await relay.enrol()
    async with Agent(relay, device_id, key) as agent, Console(relay) as tech:
        opened = await ask_help(agent)
        await call(relay, "POST", f"/v1/tickets/{opened.support_code}/accept", "tech")
        await call(relay, "POST", f"/v1/tickets/{opened.support_code}/work", "tech", {})
        await tech.request(
            m.ScriptRunRequest(id=1, device_id=device_id, script="printer-status-test", version="1")
        )
        request = await _next_run(agent)
        assert request.job_id is not None
        hostile = {
            "decision": "<b>denied</b>",
            "answered_by": "<img src=x onerror=alert(1)>\x1b[2J",
        }
        for reply in (
            m.ScriptProgress(
                id=request.id,
                job_id=request.job_id,
                step="consent_answered",
                at=1.0,
                detail=hostile,
            ),
            m.ScriptProgress(
                id=request.id,
                job_id=request.job_id,
                step="backup_made",
                at=2.0,
                detail={"backup_id": "</td><script>x()</script>"},
            ),
            m.ScriptFinished(
                id=request.id, job_id=request.job_id, status="failed", finished_at=3.0
            ),
        ):
            await agent.reply(reply)
        while not any(isinstance(a, m.ScriptFinished) for a in await tech.next()):
            pass
    status, page = await call(relay, "GET", f"/v1/reports?store={relay.store}&format=html", "boss")
    assert status == 200
    assert opened.support_code in page
    for raw in ("<img", "<script>", "<b>denied", "\x1b"):
        assert raw not in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page
    assert "&lt;/td&gt;&lt;script&gt;x()&lt;/script&gt;" in page


async def _next_run(agent: Agent) -> m.ScriptRunRequest:
    """The next run the till is asked for (the ticket news pushed meanwhile passed over)."""
    while True:
        for message in await agent.next():
            if isinstance(message, m.ScriptRunRequest):
                return message


async def _run_one(agent: Agent, console: Console, device_id: str, run_id: int) -> str:
    """A run the console asks for and the (fake) till finishes at once; its job id."""
    await console.request(
        m.ScriptRunRequest(
            id=run_id, device_id=device_id, script="printer-status-test", version="1.0.0"
        )
    )
    request = await _next_run(agent)
    assert request.job_id is not None
    await agent.reply(
        m.ScriptFinished(
            id=request.id, job_id=request.job_id, status="succeeded", finished_at=1.0, exit_code=0
        )
    )
    while not any(isinstance(a, m.ScriptFinished) for a in await console.next()):
        pass
    return request.job_id


async def test_a_run_is_on_the_ticket_it_was_for_and_on_one_ticket_only(relay: Relay) -> None:
    """README walk: jobs were linked by device and time, so one run showed on two tickets (and
    counted twice) and runs for no ticket were attached. Now a run is the ticket's its
    technician last marked as worked on (``run --ticket``); a run for none is on none."""
    device_id, key = await relay.enrol()
    async with (
        Agent(relay, device_id, key) as agent,
        Console(relay, "tech") as tech,
        Console(relay, "admin") as admin,
    ):
        first = await ask_help(agent, description="打印机不出纸")
        second = await ask_help(agent, description="扫码枪没反应", category="scanner")
        codes = (first.support_code, second.support_code)
        for code in codes:
            status, _ = await call(relay, "POST", f"/v1/tickets/{code}/accept", "tech")
            assert status == 200
        await call(relay, "POST", f"/v1/tickets/{codes[0]}/work", "tech", {})
        on_first = await _run_one(agent, tech, device_id, 1)
        await call(relay, "POST", f"/v1/tickets/{codes[1]}/work", "tech", {})
        on_second = await _run_one(agent, tech, device_id, 2)
        for_none = await _run_one(agent, admin, device_id, 3)  # nobody said which ticket
    shown = {}
    for code in codes:
        status, shown[code] = await call(relay, "GET", f"/v1/tickets/{code}", "tech")
    assert [j["id"] for j in shown[codes[0]]["jobs"]] == [on_first]
    assert [j["id"] for j in shown[codes[1]]["jobs"]] == [on_second]
    status, report = await call(relay, "GET", f"/v1/reports?store={relay.store}", "boss")
    listed = [j["id"] for t in report["stores"][0]["tickets"] for j in t["jobs"]]
    assert sorted(listed) == sorted([on_first, on_second])  # each once; not the third
    assert for_none not in listed
    assert report["summary"]["jobs"] == {"succeeded": 2}


async def test_a_reopened_ticket_keeps_the_response_it_missed_in_the_report(
    relay: Relay,
) -> None:
    """README walk: reopening restarted the clocks and the report then said no response was
    missed, though the breach was recorded. A recorded breach stays missed."""
    status, _ = await call(
        relay, "POST", f"/v1/merchants/{relay.merchant}/sla", "admin", {"response_seconds": 60}
    )
    device_id, key = await relay.enrol()
    async with Agent(relay, device_id, key) as agent:
        opened = await ask_help(agent)
    code = opened.support_code
    relay.clock.offset += 600  # answered late
    for user in ("tech", "boss"):
        status, body = await relay.post("/v1/login", {"username": user, "password": PASSWORD})
        relay.tokens[user] = str(body["token"])
    assert await sweep_breaches(relay.state) == 1
    for verb in ("accept", "resolve", "reopen", "accept"):
        status, body = await call(relay, "POST", f"/v1/tickets/{code}/{verb}", "tech", {})
        assert status == 200, (verb, body)
    status, report = await call(relay, "GET", f"/v1/reports?store={relay.store}", "boss")
    (ticket,) = report["stores"][0]["tickets"]
    assert ticket["response"]["missed"] is True
    assert ticket["response"]["met"] is False  # the reopened clock was met; the first was not
    assert report["summary"]["response_missed"] == 1
    assert report["summary"]["response_met"] == 0


async def test_ticket_show_says_each_step_once_in_words(
    relay: Relay,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """README walk: ``ticket show`` printed "accepted accepted" and one "working in_progress"
    per run."""
    device_id, key = await relay.enrol()
    async with Agent(relay, device_id, key) as agent:
        opened = await ask_help(agent)
    code = opened.support_code
    await call(relay, "POST", f"/v1/tickets/{code}/accept", "tech")
    for _ in range(3):  # three runs with --ticket: three "working" steps in a row
        await call(relay, "POST", f"/v1/tickets/{code}/work", "tech", {})
    ask = {"text": "纸卷装好了吗?", "state": "waiting_merchant"}
    await call(relay, "POST", f"/v1/tickets/{code}/note", "tech", ask)
    status, out, _ = await console(
        relay, tmp_path, monkeypatch, capsys, "tech", "ticket", "show", code
    )
    assert status == 0
    assert out.count("working on it / 处理") == 1
    assert "accepted / 接单" in out
    assert "accepted accepted" not in out
    assert "asked the merchant / 提问商户 纸卷装好了吗?" in out
