"""Web console costs: the fleet page with 1,000 and 10,000 devices (server time and bytes, over
HTTP from a real relay), against the JSON listing of the same devices (``GET /v1/devices``)
measured in the same run; one poll cycle of 50 open fleet pages (CPU of this process, relay and
client together, against 50 JSON listings); and the first contentful paint of the 1,000-device
fleet page in real headless Chromium.

``python -m benchmarks.bench_console [--sizes 1000,10000] [--runs 5] [--no-browser]``; prints
markdown. Issue 15's target: 1,000 devices paint in under 1 s on this machine.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import secrets
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from aiohttp import ClientSession, CookieJar

from posassist.relay.storage import schema as t
from posassist.relay.web.routes import ROWS
from tests.relay.harness import PASSWORD, Relay, start_relay

_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


async def _fill(relay: Relay, count: int) -> None:
    """``count`` devices spread over 20 stores of 4 merchants, each with facts, in one
    transaction (enrolling them one by one would measure enrolment, not the page)."""
    storage = relay.state.storage
    now = relay.clock()
    stores = []
    for m in range(4):
        merchant = await storage.create_merchant(relay.org, f"商户 Merchant {m}", now=now)
        for s in range(5):
            stores.append((await storage.create_store(merchant.id, f"门店 {m}-{s}", now=now)).id)
    rows = [
        {
            "id": f"dev_{secrets.token_hex(10)}",
            "store_id": stores[i % len(stores)],
            "public_key": secrets.token_bytes(32),
            "status": "active",
            "enrolled_at": now - 86400,
            "last_seen": now - (i % 7200),
            "agent_version": "0.1.0",
            "facts": {"hostname": f"TILL-{i:05d}", "os": "Windows", "pos_name": "思迅商锐 9"},
        }
        for i in range(count)
    ]
    await storage.run_write(lambda conn: conn.execute(t.devices.insert(), rows))


async def _signed_in(http: ClientSession, base: str) -> None:
    async with http.get(base + "/") as r:
        match = _CSRF.search(await r.text())
    assert match is not None
    form = {"csrf": match.group(1), "username": "admin", "password": PASSWORD}
    async with http.post(base + "/signin", data=form, allow_redirects=False) as r:
        assert r.status == 303, r.status


async def _timed(
    http: ClientSession, url: str, runs: int, *, before: Any = None, **kw: object
) -> tuple[float, int]:
    """Median milliseconds and bytes of ``runs`` GETs of ``url`` (``before()`` before each)."""
    times, size = [], 0
    for _ in range(runs):
        if before is not None:
            before()
        start = time.perf_counter()
        async with http.get(url, **kw) as r:  # type: ignore[arg-type]
            body = await r.read()
            assert r.status == 200, r.status
            wire = r.content_length  # sent (gzipped rows); the body is read decompressed
        times.append((time.perf_counter() - start) * 1000)
        size = len(body) if wire is None else wire
    return statistics.median(times), size


#: Open fleet pages in the fan-out measurement (issue 15: 50 browser sessions).
SESSIONS = 50


async def _fan_out(http: ClientSession, base: str, token: str) -> tuple[float, float, float, float]:
    """One poll cycle of SESSIONS open fleet pages of one scope (their rows fetched at once, as
    after a change: nothing cached), then SESSIONS JSON listings as the baseline: wall seconds
    and CPU seconds of this process for each."""

    async def rows() -> None:
        async with http.get(base + "/fleet/rows") as r:
            await r.read()

    async def listing() -> None:
        async with http.get(
            base + "/v1/devices", headers={"Authorization": f"Bearer {token}"}
        ) as r:
            await r.read()

    out = []
    for one in (rows, listing):
        wall, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(one() for _ in range(SESSIONS)))
        out += [time.perf_counter() - wall, time.process_time() - cpu]
    return out[0], out[1], out[2], out[3]


async def _first_paint(relay: Relay, profile: Path) -> float:
    from tests.e2e.chromium import start_browser

    browser = await start_browser(profile)
    try:
        await browser.goto(relay.http + "/")
        await browser.evaluate(
            "document.querySelector('[name=username]').value = 'admin';"
            f"document.querySelector('[name=password]').value = {PASSWORD!r}; true"
        )
        mark = len(browser.events)
        await browser.evaluate("document.querySelector('form').submit()")
        await browser.wait_event("Page.loadEventFired", after=mark)
        await browser.goto(relay.http + "/fleet")  # a fresh navigation of the fleet page itself
        paint = await browser.evaluate(
            "new Promise((resolve) => new PerformanceObserver((list) => {"
            " const fcp = list.getEntries().find(e => e.name === 'first-contentful-paint');"
            " if (fcp) resolve(fcp.startTime);"
            "}).observe({type: 'paint', buffered: true}))"
        )
        return float(paint)
    finally:
        await browser.close()


async def main(sizes: list[int], runs: int, browser: bool) -> None:
    print("| devices | page | median ms | bytes sent | ms vs JSON listing |")
    print("|---:|---|---:|---:|---:|")
    paints = []
    fan_outs: list[tuple[int, float, float, float, float]] = []
    for size in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            relay = await start_relay(Path(tmp))
            try:
                await _fill(relay, size)
                token = relay.tokens["admin"]
                cached = relay.server.app[ROWS]
                async with ClientSession(cookie_jar=CookieJar(unsafe=True)) as http:
                    await _signed_in(http, relay.http)
                    api_ms, api_bytes = await _timed(
                        http,
                        relay.http + "/v1/devices",
                        runs,
                        headers={"Authorization": f"Bearer {token}"},
                    )
                    rows = [
                        ("GET /v1/devices (baseline)", api_ms, api_bytes),
                        ("GET /fleet", *await _timed(http, relay.http + "/fleet", runs)),
                        (
                            "GET /fleet/rows (rendered)",
                            *await _timed(
                                http, relay.http + "/fleet/rows", runs, before=cached.clear
                            ),
                        ),
                        (
                            "GET /fleet/rows (another page, within 2 s)",
                            *await _timed(http, relay.http + "/fleet/rows", runs),
                        ),
                        (
                            "GET /fleet/rows?q=TILL-00001 (rendered)",
                            *await _timed(
                                http,
                                relay.http + "/fleet/rows?q=TILL-00001",
                                runs,
                                before=cached.clear,
                            ),
                        ),
                    ]
                    cached.clear()
                    fan = await _fan_out(http, relay.http, token)
                for name, ms, size_bytes in rows:
                    print(f"| {size} | {name} | {ms:.1f} | {size_bytes} | {ms / api_ms:.2f} |")
                fan_outs.append((size, *fan))
                if browser and size == 1000:
                    paints.append((size, await _first_paint(relay, Path(tmp) / "chromium")))
            finally:
                await relay.server.close()
    print(
        f"\n| devices | {SESSIONS} polls of /fleet/rows: wall s | CPU s | "
        f"{SESSIONS} JSON listings: wall s | CPU s | CPU ratio |"
    )
    print("|---:|---:|---:|---:|---:|---:|")
    for size, wall, cpu, api_wall, api_cpu in fan_outs:
        print(
            f"| {size} | {wall:.2f} | {cpu:.2f} | {api_wall:.2f} | {api_cpu:.2f} | "
            f"{cpu / api_cpu:.2f} |"
        )
    for size, paint in paints:
        print(
            f"\nFirst contentful paint of /fleet with {size} devices in headless Chromium: "
            f"{paint:.0f} ms (target < 1000 ms)"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="1000,10000")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--no-browser", action="store_true")
    args = parser.parse_args()
    asyncio.run(
        main([int(s) for s in args.sizes.split(",")], args.runs, browser=not args.no_browser)
    )
