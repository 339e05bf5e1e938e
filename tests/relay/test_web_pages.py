"""The web console's fleet and device pages over a real relay with real agents (websockets):
grouping by merchant and store, online state, search and filter, the live fragment, scope (404
and audited), findings in words, and every till-supplied string rendered inert (markup, quotes,
bidi overrides) whether it came over the wire or was already in the database."""

from __future__ import annotations

import asyncio
import re
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import pytest
from aiohttp import ClientSession, CookieJar

from posassist.agent.checks import rules
from posassist.agent.findings import Finding, finding
from posassist.agent.helpwindow.summary import summarise
from posassist.protocol import messages as m
from posassist.relay.storage import Device, Role, Scope, ScopeKind, schema
from posassist.relay.storage.admin import AdminStore
from tests.relay.harness import _HASH, Agent, Relay, start_relay, wait_until
from tests.relay.test_admin_api import call
from tests.relay.test_tickets import ask_help
from tests.relay.test_web_console import Browser

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

HOSTILE = '<script>alert("x")</script>\'"><img src=x onerror=alert(1)>'
BIDI = "TILL\u202egnp.exe\u2066x\u2069"


@pytest.fixture
async def relay(tmp_path: Path) -> AsyncIterator[Relay]:
    relay = await start_relay(tmp_path)
    yield relay
    await relay.server.close()


@pytest.fixture
async def browser(relay: Relay) -> AsyncIterator[Browser]:
    async with ClientSession(cookie_jar=CookieJar(unsafe=True)) as http:
        yield Browser(relay.http, http)


async def _flushed(relay: Relay) -> None:
    await wait_until(lambda: not relay.state.presence and not relay.state.writing)


async def test_the_fleet_groups_by_merchant_and_store_and_shows_who_is_online(
    relay: Relay, browser: Browser
) -> None:
    main_id, main_key = await relay.enrol()
    harbour_id, _ = await relay.enrol(await relay.invite(relay.other_store))
    await browser.sign_in("admin")
    async with Agent(relay, main_id, main_key) as agent:
        await agent.reply(m.DeviceFacts(facts={"hostname": "TILL-MAIN-1"}))
        await agent.reply(m.Heartbeat(seq=1, sent_at=1.0))
        await agent.next()
        status, page, _ = await browser.get("/fleet")
        assert status == 200
        # merchant heading, then its stores by name (Harbour before Main St)
        assert page.index("Noodle House") < page.index("Harbour") < page.index("Main St")
        main = page[page.index("Main St") :]
        assert "TILL-MAIN-1" in main
        assert re.search(r'class="device online health-ok"', main)
        harbour = page[page.index("Harbour") : page.index("Main St")]
        assert harbour_id in harbour
        assert "离线" in harbour
        assert "从未" in harbour  # never seen
        # the search finds the till by its store's name, and by its host name
        _, page, _ = await browser.get("/fleet?q=main+st")
        assert "TILL-MAIN-1" in page
        assert harbour_id not in page
        _, page, _ = await browser.get("/fleet?q=till-main")
        assert main_id in page
        assert harbour_id not in page
        _, page, _ = await browser.get("/fleet?show=offline")
        assert harbour_id in page
        assert main_id not in page
        # the live fragment: the rows alone, asking again by themselves
        _, rows, _ = await browser.get("/fleet/rows?show=online")
        assert rows.startswith('<div id="fleet-rows"')
        assert 'hx-trigger="every 5s"' in rows
        assert "/fleet/rows?q=&amp;show=online" in rows
        assert main_id in rows
        assert "<html" not in rows
    await wait_until(lambda: relay.state.router.agent(main_id) is None)
    _, rows, _ = await browser.get("/fleet/rows")
    assert re.search(r'class="device offline health-ok"', rows)


async def test_a_technician_sees_only_their_store_and_another_device_is_404(
    relay: Relay, browser: Browser
) -> None:
    mine, _ = await relay.enrol()
    theirs, _ = await relay.enrol(await relay.invite(relay.other_store))
    await browser.sign_in("tech")  # scoped to Main St
    _, page, _ = await browser.get("/fleet")
    assert mine in page
    assert theirs not in page
    assert "Harbour" not in page
    status, page, _ = await browser.get(f"/devices/{theirs}")
    assert status == 404
    assert "未找到" in page
    assert "not found" not in page  # the zh page in Chinese only
    unknown_status, _, _ = await browser.get("/devices/dev_" + "0" * 32)
    assert unknown_status == 404  # the same answer as someone else's device
    refused = [
        (r.action, r.target, dict(r.detail).get("reason"))
        async for r in relay.state.storage.records()
        if str(r.outcome) == "refused"
    ]
    assert ("device.read", f"device:{theirs}", "out of scope") in refused
    assert (await browser.get(f"/devices/{mine}"))[0] == 200


async def test_the_device_page_puts_findings_first_in_words_not_json(
    relay: Relay, browser: Browser
) -> None:
    device_id, key = await relay.enrol()
    paper_finding = finding("printer.paper_out", "printers", subject="EPSON TM-T20III")
    async with Agent(relay, device_id, key) as agent:
        await agent.reply(
            m.DeviceFacts(
                facts={
                    "hostname": "TILL-07",
                    "printers": ({"name": "收银小票", "target": "COM3", "model": "Epson"},),
                }
            )
        )
        await agent.reply(
            m.AlertRaised(
                id=1,
                device_id=device_id,
                alert_key="k1",
                check_name="printer.paper",
                severity="critical",
                state="firing",
                summary="打印机缺纸 / Printer out of paper",
                observed_at=relay.clock(),
                # the details as the agent's monitor builds them: findings under "evidence"
                details=_agent_alert_details(paper_finding),
            )
        )
        assert (await agent.next()) == [m.AlertAcknowledged(id=1, duplicate=False)]
        # the help request's summary as the till's help window sends it
        summary = summarise([finding("printer.paper_out", "printers", subject="EPSON TM-T20III")])
        await ask_help(agent, diagnostics={"findings": tuple(summary["findings"])})
    await _flushed(relay)
    await browser.sign_in("tech")
    status, page, _ = await browser.get(f"/devices/{device_id}")
    assert status == 200
    assert "打印机缺纸" in page  # the finding's title in words
    assert "收银员" in page  # the cashier's next step
    assert "EPSON TM-T20III" in page
    assert '"code"' not in page  # no JSON
    assert "{&#39;" not in page  # no dict repr
    assert page.index("未解决的告警") < page.index("设备信息")  # findings before facts
    # the open alert's own findings in words, from the shape a real agent sends
    (alert,) = re.findall(r'<div class="alert sev-critical">(.*?)</div>\s*</section>', page, re.S)
    assert "收银员" in alert  # the cashier's next step
    assert "EPSON TM-T20III" in alert
    assert "收银小票" in page
    _, page, _ = await browser.get("/fleet")
    assert re.search(r'class="device offline health-critical"', page)
    _, page, _ = await browser.get("/alerts")
    assert '<td class="wrap">打印机缺纸</td>' in page  # the summary in the page's language
    assert "Printer out of paper" not in page
    await browser.get("/lang?to=en&next=/fleet")
    _, page, _ = await browser.get("/alerts")
    assert '<td class="wrap">Printer out of paper</td>' in page
    await browser.get("/lang?to=zh&next=/fleet")
    _, page, _ = await browser.get("/tickets")
    assert "打印机不出纸" in page
    assert "<td>打印机</td>" in page  # the category in words, not "printer"


def _agent_alert_details(found: Finding) -> dict[str, Any]:
    """An alert's details in the agent's own shape: its rule's verdict evidence (findings under
    ``evidence``), as agent/checks/monitor.py queues it."""
    verdict = rules._verdict([found], SimpleNamespace(severity=None))  # type: ignore[arg-type]
    return {"agent_time": 1.0, "codes": list(verdict.codes), "evidence": verdict.evidence}


def _inert(page: str) -> None:
    assert "<script>alert" not in page
    assert "<img src=x" not in page
    assert "onerror=alert" not in page or "&lt;img src=x onerror=alert(1)&gt;" in page
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in page
    for control in ("\u202e", "\u2066", "\u2069"):
        assert control not in page


async def test_till_strings_with_markup_quotes_and_bidi_are_rendered_inert(
    relay: Relay, browser: Browser
) -> None:
    device_id, key = await relay.enrol()
    async with Agent(relay, device_id, key) as agent:
        await agent.reply(
            m.DeviceFacts(
                facts={
                    "hostname": HOSTILE,
                    "os": HOSTILE,
                    "pos_name": HOSTILE,
                    "printers": ({"name": HOSTILE, "target": HOSTILE, "model": HOSTILE},),
                }
            )
        )
        await agent.reply(
            m.AlertRaised(
                id=1,
                device_id=device_id,
                alert_key="k1",
                check_name="printer.paper",
                severity="warning",
                state="firing",
                summary=HOSTILE,
                observed_at=relay.clock(),
                details={
                    "evidence": {"findings": ({"code": "printer.paper_out", "subject": HOSTILE},)}
                },
            )
        )
        assert (await agent.next()) == [m.AlertAcknowledged(id=1, duplicate=False)]
        await ask_help(
            agent,
            description=HOSTILE,
            diagnostics={"findings": ({"code": HOSTILE, "zh": HOSTILE, "en": HOSTILE},)},
        )
    await _flushed(relay)
    await browser.sign_in("admin")
    for path in ("/fleet", "/fleet/rows", f"/devices/{device_id}", "/alerts", "/tickets"):
        status, page, _ = await browser.get(path)
        assert status == 200, path
        _inert(page)
    # what the protocol refuses can still be in a database written by an older relay: a page
    # never trusts its storage either
    await relay.state.storage.record_presence(
        device_id, now=relay.clock(), facts={"hostname": BIDI + HOSTILE, "os": BIDI}
    )
    for path in ("/fleet", f"/devices/{device_id}"):
        status, page, _ = await browser.get(path)
        assert status == 200
        _inert(page)
        assert "TILLgnp.exex" in page  # the overrides dropped, the letters kept in stored order


async def test_names_of_stores_and_users_are_rendered_inert_too(
    relay: Relay, browser: Browser
) -> None:
    storage = relay.state.storage
    now = relay.clock()
    merchant = await storage.create_merchant(relay.org, HOSTILE, now=now)
    store = await storage.create_store(merchant.id, BIDI + HOSTILE, now=now)
    device_id, _ = await relay.enrol(await relay.invite(store.id))
    await storage.create_user(
        "x-admin", _HASH, Role.ADMIN, Scope(ScopeKind.ORGANISATION, relay.org), now=now
    )
    await browser.sign_in("x-admin")
    for path in ("/fleet", f"/devices/{device_id}", "/admin"):
        status, page, _ = await browser.get(path)
        assert status == 200, path
        _inert(page)


# --- queues and the audit log --------------------------------------------------------------------


async def test_the_tickets_queue_marks_a_missed_response_time(
    relay: Relay, browser: Browser
) -> None:
    status, body = await relay.post(
        f"/v1/merchants/{relay.merchant}/sla",
        {"response_seconds": 1800, "resolve_seconds": 4 * 3600},
        relay.tokens["admin"],
    )
    assert status == 200, body
    device_id, key = await relay.enrol()
    async with Agent(relay, device_id, key) as agent:
        opened = await ask_help(agent)
    assert opened.response_due is not None
    await browser.sign_in("tech")
    _, page, _ = await browser.get("/tickets")
    row = page[page.index(opened.support_code) :]
    row = row[: row.index("</tr>")]
    assert "已超时" not in row  # within its response time
    relay.clock.offset = opened.response_due - relay.clock() + 60  # a minute past it
    _, page, _ = await browser.get("/tickets")
    row = page[page.index(opened.support_code) :]
    row = row[: row.index("</tr>")]
    assert '<td class="late">' in row
    assert "已超时" in row


async def test_the_audit_log_is_for_admins_at_the_root_only(relay: Relay, browser: Browser) -> None:
    await browser.sign_in("tech")
    status, page, _ = await browser.get("/audit")
    assert status == 404
    assert "审计日志" not in page.split("</header>")[1]  # no record shown
    csrf = await browser.csrf()
    status, _, _ = await browser.post("/audit/verify", {"csrf": csrf})
    assert status == 404
    refused = [
        (r.action, dict(r.detail).get("via"))
        async for r in relay.state.storage.records()
        if str(r.outcome) == "refused"
    ]
    assert ("audit.read", "web") in refused
    assert ("audit.verify", "web") in refused
    verified = [r async for r in relay.state.storage.records() if r.action == "audit.verify"]
    assert [str(r.outcome) for r in verified] == ["refused"]  # nothing was verified for them


async def test_the_audit_log_names_its_targets_with_their_ids_beside(
    relay: Relay, browser: Browser
) -> None:
    device_id, key = await relay.enrol()
    async with Agent(relay, device_id, key) as agent:
        await agent.reply(m.DeviceFacts(facts={"hostname": HOSTILE}))
        await agent.reply(m.Heartbeat(seq=1, sent_at=1.0))
        await agent.next()
    await _flushed(relay)
    status, body = await call(
        relay, "PATCH", f"/v1/stores/{relay.store}", "admin", {"name": "人民路店"}
    )
    assert status == 200, body
    status, body = await call(relay, "POST", f"/v1/devices/{device_id}/revoke", "admin", {})
    assert status == 200, body
    await browser.sign_in("admin")
    status, page, _ = await browser.get("/audit")
    assert status == 200
    rows = re.findall(r"<tr class=\"outcome-[^\"]*\">(.*?)</tr>", page, re.S)
    targets = [re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)[4] for row in rows]
    store = f'store 人民路店<div class="muted id">{relay.store}</div>'
    assert store in targets  # the store renamed: its name now, its id beside
    till = [t for t in targets if device_id in t]
    assert till, targets
    for cell in till:  # the till by store and host name; the host name inert
        assert cell.startswith("device 人民路店 / &lt;script&gt;"), cell
    actors = [re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)[2] for row in rows]
    assert "user:admin" in actors  # a user's target is already its name
    assert f"device:{device_id}" not in actors  # a till that acted: by name too
    assert "<script>alert" not in page
    assert f">store:{relay.store}<" not in page  # no raw target as the main text
    assert "{&#39;" not in page  # a record's detail in words, not a dict repr
    assert "name: 人民路店" in page


async def test_diagnose_now_asks_the_till_and_shows_its_report_in_words(
    relay: Relay, browser: Browser
) -> None:
    device_id, key = await relay.enrol()
    paper = finding("printer.paper_out", "printers", subject="Epson", name="收银小票").to_dict()
    await browser.sign_in("viewer")  # any role may ask for diagnostics
    csrf = await browser.csrf()
    async with Agent(relay, device_id, key) as agent:
        status, _, response = await browser.post(f"/devices/{device_id}/diagnose", {"csrf": csrf})
        assert status == 303
        job_url = response.headers["Location"]
        (asked,) = await agent.next()
        assert isinstance(asked, m.DiagnosticsRequest)
        _, page, _ = await browser.get(job_url)
        assert "等待设备的诊断报告" in page
        assert 'hx-get="/jobs/' in page
        await agent.reply(
            m.DiagnosticsReport(
                id=asked.id,
                device_id=device_id,
                collected_at=relay.clock(),
                sections={
                    "printers": {
                        "ok": True,
                        "status": "fault",
                        "data": {"printers": [{"name": HOSTILE}]},
                        "findings": [paper],
                    },
                    "network": {"ok": True, "status": "ok", "data": {}},
                },
            )
        )
        await agent.reply(m.Heartbeat(seq=1, sent_at=1.0))
        await agent.next()
    _, page, _ = await browser.get(job_url)
    assert "<h1>诊断 · Main St / " in page  # the kind in words, the till by store and name
    assert " ·  · " not in page  # no empty field in the subtitle
    assert "diag.request" not in page
    assert "OK 正常" not in page  # each section's state in the page's language
    assert "故障" in page
    assert "打印机缺纸" in page  # the finding, in words
    assert "打印机 收银小票 没有纸了" in page
    assert "小票打印机: 故障" in page  # each section's state in words
    assert "网络: 正常" in page
    assert 'hx-get="/jobs/' not in page
    assert "<script>alert" not in page  # the till's raw data is not shown as markup
    _, page, _ = await browser.get(f"/devices/{device_id}")
    latest = page[page.index("最近的诊断") :]
    assert "立即诊断" in latest  # the device page's latest diagnostics are this report
    assert "打印机缺纸" in latest
    (job,) = [j async for j in _jobs(relay, device_id)]
    assert (job.kind, job.status.value, job.requested_by) == ("diag.request", "succeeded", "viewer")


async def _jobs(relay: Relay, device_id: str):  # type: ignore[no-untyped-def]
    from posassist.relay.storage.admin import AdminStore

    jobs, _ = await AdminStore(relay.state.storage).jobs_page(
        Scope.root(), limit=10, device_id=device_id
    )
    for job in jobs:
        yield job


async def test_an_alert_is_acknowledged_from_the_queue_once(relay: Relay, browser: Browser) -> None:
    device_id, key = await relay.enrol()
    async with Agent(relay, device_id, key) as agent:
        await agent.reply(
            m.AlertRaised(
                id=1,
                device_id=device_id,
                alert_key="k1",
                check_name="printer.paper",
                severity="warning",
                state="firing",
                summary="纸将用尽",
                observed_at=relay.clock(),
            )
        )
        assert (await agent.next()) == [m.AlertAcknowledged(id=1, duplicate=False)]
        await agent.reply(m.DeviceFacts(facts={"hostname": "TILL-MAIN-1"}))
        await agent.reply(m.Heartbeat(seq=1, sent_at=1.0))
        await agent.next()
    await _flushed(relay)
    async with ClientSession(cookie_jar=CookieJar(unsafe=True)) as http:
        viewer = Browser(relay.http, http)
        await viewer.sign_in("viewer")
        _, page, _ = await viewer.get("/alerts")
        assert "纸将用尽" in page
        # the till by its store and host name; its id only on the quieter second line
        link = f'<a href="/devices/{device_id}">Main St / TILL-MAIN-1</a>'
        assert link in page
        assert page.count(device_id) == 3  # the cell's title, the link and the second line
        assert f'<div class="muted id">{device_id}</div>' in page
        assert "/ack" not in page  # viewers may not acknowledge
    await browser.sign_in("tech")
    _, page, _ = await browser.get("/alerts")
    action = re.search(r'action="(/alerts/[^"]+/ack)"', page)
    assert action is not None
    csrf = await browser.csrf("/alerts")
    status, _, _ = await browser.post(action.group(1), {"csrf": "forged"})
    assert status == 403
    status, _, response = await browser.post(action.group(1), {"csrf": csrf})
    assert (status, response.headers["Location"]) == (303, "/alerts?done=acknowledged")
    _, page, _ = await browser.get(response.headers["Location"])
    assert "✔ 已确认告警" in page
    assert "/ack" not in page
    assert "tech · " in page  # who acknowledged, and when
    status, page, _ = await browser.post(action.group(1), {"csrf": csrf})
    assert status == 409  # the API's answer to a second acknowledgement, as a page
    assert "<html" in page


async def test_open_pages_of_one_scope_share_fresh_rows_and_never_another_scopes(
    relay: Relay, browser: Browser
) -> None:
    mine, key = await relay.enrol()
    theirs, _ = await relay.enrol(await relay.invite(relay.other_store))
    await browser.sign_in("admin")  # the root: both stores
    _, rows, _ = await browser.get("/fleet/rows")
    assert theirs in rows
    async with ClientSession(cookie_jar=CookieJar(unsafe=True)) as http:
        tech = Browser(relay.http, http)
        await tech.sign_in("tech")  # Main St only: its own rows, not the root's cached ones
        _, rows, _ = await tech.get("/fleet/rows")
        assert mine in rows
        assert theirs not in rows
    async with Agent(relay, mine, key):
        _, rows, _ = await browser.get("/fleet/rows")
        assert _card(rows, mine).startswith('<li class="device offline')  # the fresh copy
        relay.clock.offset += 3  # past ROWS_FRESH: rendered again
        _, rows, _ = await browser.get("/fleet/rows")
        assert _card(rows, mine).startswith('<li class="device online')


def _card(rows: str, device_id: str) -> str:
    """The fleet card (``<li …>``) that links to ``device_id``."""
    end = rows.index(f'href="/devices/{device_id}"')
    return rows[rows.rindex("<li", 0, end) : end]


async def test_pages_polling_at_once_are_served_by_one_render(
    relay: Relay, browser: Browser
) -> None:
    await relay.enrol()
    await browser.sign_in("admin")
    storage = relay.state.storage
    reads = 0
    list_devices = storage.list_devices

    async def counted(scope: Scope) -> list[Device]:
        nonlocal reads
        reads += 1
        return await list_devices(scope)

    storage.list_devices = counted  # type: ignore[method-assign]
    pages = await asyncio.gather(*(browser.get("/fleet/rows") for _ in range(20)))
    assert {status for status, _, _ in pages} == {200}
    assert len({page for _, page, _ in pages}) == 1
    assert reads == 1


async def test_the_rows_go_gzipped_to_a_browser_that_takes_it_and_pages_never(
    relay: Relay, browser: Browser
) -> None:
    await relay.enrol()
    await browser.sign_in("admin")
    for _ in range(2):  # rendered, then shared
        _, rows, response = await browser.get("/fleet/rows")  # aiohttp asks for gzip
        assert response.headers["Content-Encoding"] == "gzip"
        assert rows.startswith('<div id="fleet-rows"')  # decompressed by the client
    _, rows, response = await browser.get("/fleet/rows", headers={"Accept-Encoding": "identity"})
    assert "Content-Encoding" not in response.headers
    assert rows.startswith('<div id="fleet-rows"')
    # a whole page carries its CSRF token beside text the visitor typed (q): never compressed
    _, page, response = await browser.get("/fleet?q=csrf")
    assert "Content-Encoding" not in response.headers
    assert 'name="csrf"' in page


async def test_empty_pages_say_what_to_do_next(relay: Relay, browser: Browser) -> None:
    await browser.sign_in("admin")
    _, page, _ = await browser.get("/fleet")
    assert "还没有设备" in page  # not "no device matches": nothing is filtered
    assert '<a class="button" href="/admin">生成登记码</a>' in page
    _, page, _ = await browser.get("/tickets")
    assert "没有工单" in page
    assert "?show=all" not in page  # nothing closed to show either
    device_id, key = await relay.enrol()
    async with Agent(relay, device_id, key) as agent:
        opened = await ask_help(agent)
    _, page, _ = await browser.get("/fleet?q=nothing-like-it")
    assert "没有符合条件的设备" in page  # a filter that matches nothing says so
    assert "还没有设备" not in page
    await _flushed(relay)
    storage = relay.state.storage
    closing = (
        schema.tickets.update()
        .where(schema.tickets.c.support_code == opened.support_code)
        .values(status="closed")
    )
    await storage.run_write(lambda conn: conn.execute(closing))
    _, page, _ = await browser.get("/tickets")
    assert "没有未关闭的工单" in page  # only a closed one: "no open tickets", and the way to it
    assert '<a href="/tickets?show=all">显示全部工单, 含已关闭的 (1)</a>' in page
    _, page, _ = await browser.get("/tickets?show=all")
    assert "已关闭" in page
    assert '<a href="/tickets">只显示未关闭的工单</a>' in page
    async with ClientSession(cookie_jar=CookieJar(unsafe=True)) as http:
        tech = Browser(relay.http, http)
        await tech.sign_in("tech")
        await storage.revoke_device(device_id, now=relay.clock())
        await AdminStore(storage).delete_device(device_id, now=relay.clock())
        _, page, _ = await tech.get("/fleet")
        assert "请管理员生成登记码" in page  # no admin link for a technician
        assert 'href="/admin"' not in page
