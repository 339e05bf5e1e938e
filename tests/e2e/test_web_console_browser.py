"""The web console in real headless Chromium against a real relay with real agents: sign in
through the form, find a till by its store's name with the live search, watch a till come online
without reloading (htmx polling under the strict CSP), read its findings in words on the device
page, at desktop and tablet sizes; the page reports no CSP violation or script error.

Screenshots go to ``artefacts/console/`` (git-ignored); docs/console-fleet.png and
docs/console-device.png are copies of two of them.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from posassist.agent.findings import finding
from posassist.agent.helpwindow.summary import summarise
from posassist.console.scripts_repo import init_repository
from posassist.protocol import messages as m
from tests.agent.test_verify import PASS, add, approve, manifest
from tests.e2e.chromium import Browser, start_browser
from tests.relay.harness import PASSWORD, Agent, Relay, start_relay
from tests.relay.test_tickets import ask_help

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

ROOT = Path(__file__).resolve().parents[2]
ARTEFACTS = ROOT / "artefacts" / "console"


@pytest.fixture
async def relay(tmp_path: Path) -> AsyncIterator[Relay]:
    repo = init_repository(tmp_path / "approvers", ["alice", "bob"], PASS)
    script = manifest("printer-test")
    script["title"] = {"zh": "打印测试页", "en": "Print a test page"}
    script["params"] = {
        "copies": {"type": "integer", "min": 1, "max": 5, "default": 1},
        "size": {"type": "enum", "enum": ["58mm", "80mm"], "default": "80mm"},
    }
    script["consent"] = True
    script["platforms"] = ["windows"]  # the tills below are Windows 7: offered to them only
    add(repo, tmp_path, script)
    approve(repo, "alice", "bob")
    repo.publish(tmp_path / "relay")  # the relay below serves it
    relay = await start_relay(tmp_path)
    yield relay
    await relay.server.close()


async def _till(relay: Relay, store: str, host: str) -> tuple[str, object]:
    device_id, key = await relay.enrol(await relay.invite(store))
    async with Agent(relay, device_id, key) as agent:
        await agent.reply(
            m.DeviceFacts(
                facts={
                    "hostname": host,
                    "os": "Windows",
                    "os_release": "7",
                    "pos_name": "思迅商锐 9",
                    "printers": (
                        {"name": "收银小票", "target": "COM3", "model": "Epson TM-T20III"},
                    ),
                }
            )
        )
        await agent.reply(m.Heartbeat(seq=1, sent_at=1.0))
        await agent.next()
    return device_id, key


async def test_sign_in_search_watch_a_till_come_online_and_read_its_findings(
    relay: Relay, tmp_path: Path
) -> None:
    storage = relay.state.storage
    now = relay.clock()
    tea = await storage.create_merchant(relay.org, "茶语 Tea House", now=now)
    renmin = await storage.create_store(tea.id, "人民路店", now=now)
    await _till(relay, relay.store, "MAIN-TILL-02")
    harbour_id, harbour_key = await _till(relay, relay.other_store, "HARBOUR-TILL-01")
    await _till(relay, renmin.id, "RENMIN-POS-1")
    sick_id, sick_key = await _till(relay, relay.store, "MAIN-TILL-01")
    paper = finding(
        "printer.paper_out", "printers", subject="Epson TM-T20III", name="收银小票 / Receipt"
    )
    async with Agent(relay, sick_id, sick_key) as sick:
        await sick.reply(
            m.AlertRaised(
                id=1,
                device_id=sick_id,
                alert_key="paper-1",
                check_name="printer.paper",
                severity="critical",
                state="firing",
                summary="打印机缺纸 / Printer out of paper",
                observed_at=relay.clock(),
                details={
                    "findings": (
                        {"code": paper.code, "subject": paper.subject, "detail": paper.detail},
                    )
                },
            )
        )
        assert (await sick.next()) == [m.AlertAcknowledged(id=1, duplicate=False)]
        await ask_help(sick, diagnostics={"findings": tuple(summarise([paper])["findings"])})
        browser = await start_browser(tmp_path / "chromium")
        try:
            await _walk(browser, relay, harbour_id, harbour_key, sick_id)
            await _run_a_script(browser, relay, sick)
            await _make_an_enrolment_token(browser, relay)
            await _names_not_ids(browser, relay)
            await _confirm_destructive_actions(browser, relay, sick_id)
            assert browser.problems() == []  # no CSP violation, no script error
        finally:
            await browser.close()


async def _walk(
    browser: Browser, relay: Relay, harbour_id: str, harbour_key: object, sick_id: str
) -> None:
    await browser.size(1280, 900)
    await browser.goto(relay.http + "/")
    await browser.screenshot(ARTEFACTS / "signin-zh.png")
    await browser.evaluate(
        "document.querySelector('[name=username]').value = 'admin';"
        f"document.querySelector('[name=password]').value = {PASSWORD!r};"
        "true"
    )
    mark = len(browser.events)
    await browser.evaluate("document.querySelector('form[action=\"/signin\"]').submit()")
    await browser.wait_event("Page.loadEventFired", after=mark)
    assert await browser.evaluate("location.pathname") == "/fleet", await browser.evaluate(
        "document.body.innerText"
    )
    assert await browser.evaluate("document.cookie") == ""  # HttpOnly: not for scripts

    # the sick till is online and critical; the others offline
    await browser.wait_for("document.querySelector('.device.online.health-critical')")
    card = f"document.querySelector('a[href=\"/devices/{harbour_id}\"]').parentElement"
    assert await browser.evaluate(f"{card}.classList.contains('offline')")
    await browser.evaluate("window.notReloaded = true")
    # a till comes online: its card turns online without a reload (htmx polls the rows)
    async with Agent(relay, harbour_id, harbour_key):  # type: ignore[arg-type]
        await browser.wait_for(f"{card}.classList.contains('online')")
        assert await browser.evaluate("window.notReloaded === true")
        await browser.screenshot(ARTEFACTS / "fleet-zh.png")

    # find a till by its store's name: the search narrows the rows as one types
    await browser.evaluate(
        "const q = document.querySelector('input[name=q]'); q.value = '人民路';"
        "q.dispatchEvent(new Event('input', {bubbles: true})); true"
    )
    await browser.wait_for("document.querySelectorAll('.device').length === 1")
    assert "RENMIN-POS-1" in await browser.evaluate("document.querySelector('.device').textContent")
    assert await browser.evaluate("window.notReloaded === true")

    # the device page: the printer's trouble in words, findings before facts
    await browser.goto(f"{relay.http}/devices/{sick_id}")
    text = await browser.evaluate("document.body.innerText")
    assert "打印机缺纸" in text
    assert "收银员" in text
    assert text.index("未解决的告警") < text.index("设备信息")
    tickets = await browser.evaluate(
        "[...document.querySelectorAll('table')].map(t => t.innerText).join('\\n')"
    )
    assert "\t打印机\t" in tickets  # the ticket's category in words, not "printer"
    assert "\tprinter\t" not in tickets
    await browser.screenshot(ARTEFACTS / "device-zh.png")

    # English, and a tablet held upright
    await browser.goto(f"{relay.http}/lang?to=en&next=/devices/{sick_id}")
    text = await browser.evaluate("document.body.innerText")
    assert "Printer out of paper" in text
    await browser.screenshot(ARTEFACTS / "device-en.png")
    await browser.size(768, 1024, mobile=True)
    await browser.goto(relay.http + "/fleet")
    assert await browser.evaluate("document.documentElement.scrollWidth <= 768")  # no side-scroll
    await browser.screenshot(ARTEFACTS / "fleet-tablet-en.png")
    # the audit log too: its table scrolls inside its box, a time stays on one line
    await browser.goto(relay.http + "/audit")
    assert await browser.evaluate("document.documentElement.scrollWidth <= 768")
    assert await browser.evaluate(
        "(() => { const td = document.querySelector('table.rows tbody td:nth-child(2)');"
        " const text = document.createRange(); text.selectNodeContents(td);"
        " return text.getClientRects().length === 1 })()"  # its text on one line box (a row
        # may be taller: a target's id and a record's detail sit on second lines)
    )
    await browser.screenshot(ARTEFACTS / "audit-tablet-en.png")


async def _run_a_script(browser: Browser, relay: Relay, agent: Agent) -> None:
    """From the device page: choose the script, the browser refuses an out-of-range copy count
    before anything is sent, a good run asks the merchant and its output arrives live."""
    await browser.size(1280, 900)
    await browser.goto(f"{relay.http}/lang?to=zh&next=/devices/{agent.device_id}")
    mark = len(browser.events)
    await browser.evaluate("document.querySelector('a.button').click()")
    await browser.wait_event("Page.loadEventFired", after=mark)
    mark = len(browser.events)
    await browser.evaluate("document.querySelector('.scripts a').click()")
    await browser.wait_event("Page.loadEventFired", after=mark)
    copies = "document.querySelector('[name=p_copies]')"
    await browser.evaluate(f"{copies}.value = '9'; true")
    assert await browser.evaluate(f"{copies}.validity.rangeOverflow") is True
    assert await browser.evaluate("document.querySelector('form.run').checkValidity()") is False
    await browser.screenshot(ARTEFACTS / "run-form-zh.png")
    await browser.evaluate(f"{copies}.value = '2'; true")
    mark = len(browser.events)
    await browser.evaluate("document.querySelector('form.run').requestSubmit()")
    (request,) = await agent.next()  # only the good run reached the till
    assert isinstance(request, m.ScriptRunRequest)
    assert request.params == {"copies": 2, "size": "80mm"}
    await browser.wait_event("Page.loadEventFired", after=mark)
    assert request.job_id is not None
    ids = {"id": request.id, "job_id": request.job_id}
    await agent.reply(m.ScriptProgress(**ids, step="verified", at=1.0, detail={"risk": "B"}))
    await agent.reply(
        m.ScriptProgress(**ids, step="consent_asked", at=2.0, detail={"timeout": 120})
    )
    await browser.wait_for("document.body.innerText.includes('等待商户确认')")
    await browser.screenshot(ARTEFACTS / "job-consent-zh.png")
    await agent.reply(
        m.ScriptProgress(**ids, step="consent_answered", at=3.0, detail={"decision": "granted"})
    )
    await agent.reply(m.ScriptStarted(**ids, started_at=4.0))
    await agent.reply(m.ScriptOutput(**ids, seq=0, stream="stdout", data=b"printed 2 pages\n"))
    await agent.reply(m.ScriptFinished(**ids, status="succeeded", finished_at=5.0, exit_code=0))
    await browser.wait_for("document.querySelector('.finished.job-succeeded')")
    text = await browser.evaluate("document.body.innerText")
    assert "商户已同意" in text
    assert "printed 2 pages" in text
    await browser.screenshot(ARTEFACTS / "job-done-zh.png")


async def _make_an_enrolment_token(browser: Browser, relay: Relay) -> None:
    """Administration: a token for a store, as text and a QR code the till can scan; it enrols."""
    await browser.goto(relay.http + "/admin")
    await browser.screenshot(ARTEFACTS / "admin-zh.png")
    mark = len(browser.events)
    await browser.evaluate(
        "document.querySelector('form[action=\"/admin/enrolments\"]').requestSubmit()"
    )
    await browser.wait_event("Page.loadEventFired", after=mark)
    width = await browser.evaluate("document.querySelector('img.qr').naturalWidth")
    assert width > 0  # the QR code's SVG loaded under the CSP
    token = await browser.evaluate("document.querySelector('pre.token').textContent")
    await browser.screenshot(ARTEFACTS / "enrolment-qr-zh.png")
    device_id, _ = await relay.enrol(token)
    assert device_id.startswith("dev_")


async def _names_not_ids(browser: Browser, relay: Relay) -> None:
    """The audit log, the alerts queue, the enrolment tokens and a store's hours read in names
    and words at desktop and tablet widths; the hours form refuses a bad date in the browser."""
    for width, height, mobile in ((1280, 900, False), (768, 1024, True)):
        await browser.size(width, height, mobile=mobile)
        await browser.goto(relay.http + "/audit")
        text = await browser.evaluate("document.body.innerText")
        assert "store:sto_" not in text  # a target by name; its id on the quieter line
        assert "device:dev_" not in text
        assert "Main St / MAIN-TILL-01" in text
        assert await browser.evaluate(f"document.documentElement.scrollWidth <= {width}")
        await browser.screenshot(ARTEFACTS / f"audit-names-{width}.png", full_page=False)
        await browser.goto(relay.http + "/alerts")
        text = await browser.evaluate("document.body.innerText")
        assert "Main St / MAIN-TILL-01" in text
        assert await browser.evaluate(f"document.documentElement.scrollWidth <= {width}")
        await browser.screenshot(ARTEFACTS / f"alerts-names-{width}.png")
        await browser.goto(relay.http + "/admin")
        assert await browser.evaluate(f"document.documentElement.scrollWidth <= {width}")
        text = await browser.evaluate("document.querySelector('table.tokens').innerText")
        assert "已使用" in text
        assert "admin" in text  # who created it
        await browser.evaluate("document.querySelector('table.tokens').scrollIntoView(); true")
        await browser.screenshot(ARTEFACTS / f"enrolment-tokens-{width}.png", full_page=False)
        await browser.evaluate("document.querySelector('fieldset.hours').scrollIntoView(); true")
        await browser.screenshot(ARTEFACTS / f"store-hours-{width}.png", full_page=False)
    dates = "document.querySelector('[name=closed_dates]')"
    form = "document.querySelector('form.store-form')"
    assert await browser.evaluate(f"{form}.checkValidity()") is True
    await browser.evaluate(f"{dates}.value = '25/12/2026'; true")
    assert await browser.evaluate(f"{dates}.validity.patternMismatch") is True
    assert await browser.evaluate(f"{form}.checkValidity()") is False  # not sent
    await browser.evaluate(f"{dates}.value = '2026-12-25, 2027-01-01'; true")
    assert await browser.evaluate(f"{form}.checkValidity()") is True
    clock = "document.querySelector('[name=open_mon_0]')"
    assert await browser.evaluate(f"{clock}.type") == "text"  # 24-hour HH:MM, no AM/PM
    await browser.evaluate(f"{clock}.value = '9:00 PM'; true")
    assert await browser.evaluate(f"{clock}.validity.patternMismatch") is True
    await browser.evaluate(f"{clock}.value = '21:00'; true")
    assert await browser.evaluate(f"{form}.checkValidity()") is True


async def _confirm_destructive_actions(browser: Browser, relay: Relay, device_id: str) -> None:
    """Revoking a till asks first on a page of its own (no script); going back changes nothing;
    confirming does it and the device page says so. Screenshots of the new pages at both
    widths."""
    await browser.size(1280, 900)
    await browser.goto(f"{relay.http}/lang?to=zh&next=/devices/{device_id}")
    revoke = f"document.querySelector('form[action=\"/admin/devices/{device_id}/revoke\"]')"
    for step in ("cancel", "confirm"):
        mark = len(browser.events)
        await browser.evaluate(f"{revoke}.requestSubmit(); true")
        await browser.wait_event("Page.loadEventFired", after=mark)
        text = await browser.evaluate("document.body.innerText")
        assert "注销此设备?" in text
        assert "MAIN-TILL-01" in text  # what goes, by name
        await browser.screenshot(ARTEFACTS / "confirm-revoke-1280.png")
        mark = len(browser.events)
        if step == "cancel":
            await browser.evaluate("document.querySelector('a.button.secondary').click(); true")
            await browser.wait_event("Page.loadEventFired", after=mark)
            assert await browser.evaluate("location.pathname") == f"/devices/{device_id}"
            assert await browser.evaluate("document.querySelector('.flash')") is None
            continue
        await browser.evaluate("document.querySelector('.confirm form').requestSubmit(); true")
        await browser.wait_event("Page.loadEventFired", after=mark)
        assert "设备已注销" in await browser.evaluate("document.querySelector('.flash').innerText")
        await browser.screenshot(ARTEFACTS / "revoked-flash-1280.png")
    for width, height, mobile in ((1280, 900, False), (768, 1024, True)):
        await browser.size(width, height, mobile=mobile)
        for path, name in (("/admin", "admin"), ("/account", "account"), ("/tickets", "tickets")):
            await browser.goto(relay.http + path)
            assert await browser.evaluate(f"document.documentElement.scrollWidth <= {width}"), path
            await browser.screenshot(ARTEFACTS / f"walkfix-{name}-{width}.png")
        await browser.goto(relay.http + "/admin")
        await browser.evaluate("document.querySelector('table.users').scrollIntoView(); true")
        await browser.screenshot(ARTEFACTS / f"walkfix-users-{width}.png", full_page=False)
