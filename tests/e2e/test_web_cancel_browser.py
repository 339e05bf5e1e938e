"""The job page's cancel button in real headless Chromium (docs/protocol.md#cancel): shown while a
script runs, the click reaches the till as ``script.cancel``, the page then says cancelled and
the button is gone; no CSP violation or script error. Screenshots go to ``artefacts/console/``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from posassist.protocol import messages as m
from tests.e2e.chromium import start_browser
from tests.relay.harness import PASSWORD, Agent, Console, start_relay

if TYPE_CHECKING:
    from tests.e2e.chromium import Browser
    from tests.relay.harness import Relay

ARTEFACTS = Path(__file__).resolve().parents[2] / "artefacts" / "console"


async def _sign_in(browser: Browser, relay: Relay, username: str) -> None:
    await browser.goto(relay.http + "/")
    await browser.evaluate(
        f"document.querySelector('[name=username]').value = {username!r};"
        f"document.querySelector('[name=password]').value = {PASSWORD!r};"
        "true"
    )
    mark = len(browser.events)
    await browser.evaluate("document.querySelector('form[action=\"/signin\"]').submit()")
    await browser.wait_event("Page.loadEventFired", after=mark)


async def test_a_technician_cancels_a_live_run_from_its_job_page(tmp_path: Path) -> None:
    relay = await start_relay(tmp_path)
    browser = None
    try:
        device_id, key = await relay.enrol()
        async with Agent(relay, device_id, key) as agent, Console(relay) as console:
            await console.request(
                m.ScriptRunRequest(id=1, device_id=device_id, script="long-wait", version="1.0.0")
            )
            (run,) = await agent.next()
            assert isinstance(run, m.ScriptRunRequest)
            assert run.job_id is not None
            ids = {"id": run.id, "job_id": run.job_id}
            await agent.reply(m.ScriptStarted(**ids, started_at=1.0))
            browser = await start_browser(tmp_path / "chromium")
            await browser.size(1280, 900)
            await _sign_in(browser, relay, "tech")
            await browser.goto(f"{relay.http}/jobs/{run.job_id}")
            button = "document.querySelector('form.cancel button')"
            await browser.wait_for(button)
            assert "取消运行" in await browser.evaluate(f"{button}.textContent")
            await browser.screenshot(ARTEFACTS / "job-cancel-zh.png")
            mark = len(browser.events)
            await browser.evaluate(f"{button}.click(); true")
            (asked,) = await agent.next()  # the click reached the till
            assert isinstance(asked, m.ScriptCancel)
            assert asked.job_id == run.job_id
            detail = "cancelled on request: the script's process tree was stopped"
            for request_id in (run.id, asked.id):
                await agent.reply(
                    m.ScriptFinished(
                        id=request_id,
                        job_id=run.job_id,
                        status="cancelled",
                        finished_at=2.0,
                        exit_code=-15,
                        detail=detail,
                    )
                )
            await browser.wait_event("Page.loadEventFired", after=mark)
            await browser.wait_for("document.querySelector('.job-status.job-cancelled')")
            text = await browser.evaluate("document.body.innerText")
            assert "已取消" in text
            assert "process tree was stopped" in text  # the till's words, as the job's end
            assert await browser.evaluate("document.querySelector('form.cancel')") is None
            await browser.screenshot(ARTEFACTS / "job-cancelled-zh.png")
            assert browser.problems() == []  # no CSP violation, no script error
            await console.next()
    finally:
        if browser is not None:
            await browser.close()
        await relay.server.close()
