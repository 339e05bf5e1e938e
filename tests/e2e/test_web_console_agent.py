"""The web console with real processes: a `posassist-relay serve` serving a signed script
repository, a real `posassist-agent run` till; a technician signs in over HTTP, asks the till
for diagnostics and runs the vetted script from the device's pages, and reads the real answers."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from aiohttp import ClientSession, CookieJar

from posassist.client.http import http_url
from posassist.console.scripts_repo import init_repository
from tests.agent.test_verify import PASS, add, approve, manifest
from tests.e2e.cli import ADMIN_PASSWORD, ok, provision, start_agent, start_relay, stop
from tests.e2e.test_vetted_scripts import enroll
from tests.relay.test_web_console import Browser

if TYPE_CHECKING:
    from pathlib import Path


async def _until_done(browser: Browser, job_url: str, timeout: float = 60) -> str:
    """The job page once it stops following itself (the run ended); the relay and the till are
    other processes, so this asks again, as the page's own htmx does."""
    async with asyncio.timeout(timeout):
        while True:
            status, page, _ = await browser.get(job_url)
            assert status == 200
            if 'hx-get="/jobs/' not in page:
                return page
            await asyncio.sleep(0.2)


async def test_a_real_till_is_diagnosed_and_runs_a_script_from_the_web_console(
    tmp_path: Path,
) -> None:
    relay_dir = tmp_path / "relay"
    store = await asyncio.to_thread(provision, relay_dir)
    repo = await asyncio.to_thread(init_repository, tmp_path / "approvers", ["alice", "bob"], PASS)
    script = manifest("printer-status")
    script.update({"risk": "A", "consent": False, "unattended": True})
    script["params"] = {"lines": {"type": "integer", "min": 1, "max": 3, "default": 1}}
    body = b'echo "hello from the till <b>"; echo "lines=$2"\n'
    await asyncio.to_thread(add, repo, tmp_path, script, body)
    await asyncio.to_thread(approve, repo, "alice", "bob")
    await asyncio.to_thread(repo.publish, relay_dir)
    relay, url = await asyncio.to_thread(start_relay, relay_dir)
    agent = None
    try:
        till = tmp_path / "till"
        ok(await asyncio.to_thread(enroll, relay_dir, store, url, till, repo.root_hash()))
        agent, device_id = await asyncio.to_thread(start_agent, till)
        async with ClientSession(cookie_jar=CookieJar(unsafe=True)) as http:
            browser = Browser(http_url(url), http)
            status, _, _ = await browser.sign_in("admin", ADMIN_PASSWORD)
            assert status == 303
            _, page, _ = await browser.get("/fleet")
            assert device_id in page
            assert "在线" in page  # the real till is connected

            csrf = await browser.csrf(f"/devices/{device_id}")
            status, _, response = await browser.post(
                f"/devices/{device_id}/diagnose", {"csrf": csrf}
            )
            assert status == 303
            page = await _until_done(browser, response.headers["Location"])
            assert "诊断结果" in page
            assert "系统: " in page  # the real report's sections, in words

            form = {
                "csrf": csrf,
                "script": "printer-status",
                "version": "1.0.0",
                "p_lines": "9",  # out of range: refused here, nothing reaches the till
            }
            status, _, _ = await browser.post(f"/devices/{device_id}/run", form)
            assert status == 400
            _, page, _ = await browser.get(
                f"/devices/{device_id}/run?script=printer-status&version=1.0.0"
            )
            assert 'name="unattended"' in page  # its manifest allows an unattended run
            status, _, response = await browser.post(
                f"/devices/{device_id}/run", {**form, "p_lines": "2", "unattended": "on"}
            )
            assert status == 303
            page = await _until_done(browser, response.headers["Location"])
            assert "hello from the till &lt;b&gt;" in page
            assert "lines=2" in page
            assert "succeeded" in page
            assert "已验证签名" in page  # the agent verified the signed script first
    finally:
        if agent is not None:
            await asyncio.to_thread(stop, agent)  # type: ignore[arg-type]
        await asyncio.to_thread(stop, relay)
