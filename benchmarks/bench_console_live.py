"""The web console's live updates under load: 50 open fleet pages polling their rows every 5 s
(htmx ``every 5s``, as a browser does) while 1,000 simulated tills stay connected and report
presence (heartbeats, last-seen writes), against a real ``posassist-relay serve`` on SQLite.

Three phases of the same length on the same relay and fleet, measured in one run:

- agents only (the baseline: presence costs the relay this much CPU),
- agents + 50 fleet pages polling ``/fleet/rows`` (each page signed in through the form, from its
  own loopback address, with its own cookie),
- agents + 50 JSON listings ``GET /v1/devices`` on the same schedule (what a page that rendered
  in the browser from the API would cost the relay instead).

Relay CPU is read from the relay process itself (user + system); "per update" is the extra CPU
over the baseline divided by the polls answered. Issue 15's benchmark.

``python -m benchmarks.bench_console_live [--agents 1000] [--sessions 50] [--seconds 30]``;
prints markdown. Bounded: at most 2,000 agents, 100 sessions, 120 s a phase; 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import tempfile
import time
from pathlib import Path

from aiohttp import ClientSession, CookieJar, TCPConnector

from benchmarks.harness import Fleet, calibrate, cpu_seconds, enrol, launch_relay, rss_mb
from tests.e2e.cli import ADMIN_PASSWORD, provision

_CSRF = re.compile(r'name="csrf" value="([^"]+)"')
#: htmx's ``hx-trigger="every 5s"`` on the fleet page's rows
POLL_EVERY = 5.0


async def _session(base: str, index: int) -> ClientSession:
    """A signed-in browser session from its own loopback address (sign-in is limited per
    address, as in the field each technician's browser has its own)."""
    connector = TCPConnector(local_addr=(f"127.3.{index // 250}.{index % 250 + 1}", 0))
    http = ClientSession(connector=connector, cookie_jar=CookieJar(unsafe=True))
    async with http.get(base + "/") as r:
        match = _CSRF.search(await r.text())
    assert match is not None, "no sign-in form"
    form = {"csrf": match.group(1), "username": "admin", "password": ADMIN_PASSWORD}
    async with http.post(base + "/signin", data=form, allow_redirects=False) as r:
        assert r.status == 303, f"sign-in answered {r.status}"
    return http


async def _token(base: str) -> str:
    async with (
        ClientSession() as http,
        http.post(base + "/v1/login", json={"username": "admin", "password": ADMIN_PASSWORD}) as r,
    ):
        body = await r.json()
    return str(body["token"])


async def _poll(
    sessions: list[ClientSession], url: str, seconds: float, headers: dict[str, str]
) -> list[float]:
    """Each session GETs ``url`` every POLL_EVERY s (staggered over the period, as pages opened
    at different moments are) for ``seconds``; the answers' milliseconds."""
    times: list[float] = []
    deadline = time.monotonic() + seconds

    async def one(http: ClientSession, offset: float) -> None:
        await asyncio.sleep(offset)  # a schedule, as the browser's timer is, not a wait on events
        while time.monotonic() < deadline:
            start = time.perf_counter()
            async with http.get(url, headers=headers) as r:
                await r.read()
                assert r.status == 200, r.status
            times.append((time.perf_counter() - start) * 1000)
            await asyncio.sleep(max(0.0, POLL_EVERY - (time.perf_counter() - start)))

    n = len(sessions)
    await asyncio.gather(*(one(s, POLL_EVERY * i / n) for i, s in enumerate(sessions)))
    return times


async def _phases(
    pid: int, base: str, sessions: int, seconds: float
) -> list[tuple[float, list[float]]]:
    """Relay CPU seconds and poll times of the three phases; sign-ins happen before any is
    measured (a sign-in is a deliberately slow scrypt check, not a live update)."""
    pages = [await _session(base, i) for i in range(sessions)]
    token = await _token(base)
    listing = [ClientSession() for _ in range(sessions)]
    auth = {"Authorization": f"Bearer {token}"}
    out = []
    try:
        for clients, url, headers in (
            (None, "", {}),
            (pages, base + "/fleet/rows", {}),
            (listing, base + "/v1/devices", auth),
        ):
            before = cpu_seconds(pid)
            if clients is None:  # the baseline: the relay alone with its agents, for a period
                await asyncio.sleep(seconds)
                times: list[float] = []
            else:
                times = await _poll(clients, url, seconds, headers)
            out.append((cpu_seconds(pid) - before, times))
    finally:
        for http in pages + listing:
            await http.close()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--sessions", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    if not (1 <= args.agents <= 2000 and 1 <= args.sessions <= 100 and 5 <= args.seconds <= 120):
        parser.error("bounds: 1-2000 agents, 1-100 sessions, 5-120 s a phase")
    start_cal = calibrate()
    work = Path(tempfile.mkdtemp(prefix="posassist-bench-console-"))
    data = work / "relay"
    store = provision(data)
    relay = launch_relay(data, store)
    fleet = None
    try:
        enrol(relay, work / "ids", args.agents)
        fleet = Fleet(relay, work / "ids", 0, args.agents, 3 * args.seconds + 300)
        fleet.wait_all_connected(0, 300)
        base = relay.url.replace("ws://", "http://", 1)
        time.sleep(3.0)  # let the connect burst's writes finish before measuring a quiet relay
        (quiet, _), (rows_cpu, rows_ms), (json_cpu, json_ms) = asyncio.run(
            _phases(relay.pid, base, args.sessions, args.seconds)
        )
        connected = fleet.total_connected()
        rss = rss_mb(relay.pid)
    finally:
        if fleet is not None:
            fleet.stop()
        relay.stop()
    end_cal = calibrate()

    def row(name: str, cpu: float, times: list[float]) -> str:
        extra = cpu - quiet
        per = f"{extra / len(times) * 1000:.2f}" if times else "—"
        p50 = f"{statistics.median(times):.1f}" if times else "—"
        return (
            f"| {name} | {len(times)} | {cpu:.2f} | {cpu / args.seconds * 100:.1f} % | "
            f"{per} | {p50} |"
        )

    print(
        f"# bench_console_live: {args.agents} agents connected ({connected} at the end), "
        f"{args.sessions} sessions, {args.seconds:.0f} s a phase, relay RSS {rss:.0f} MB\n"
    )
    print(f"calibration (fixed CPU loop): {start_cal:.3f} s at start, {end_cal:.3f} s at end\n")
    print(
        "| phase | polls answered | relay CPU s | relay CPU share | extra CPU ms per poll "
        "| poll p50 ms |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    print(row("agents only (baseline)", quiet, []))
    print(row(f"+ {args.sessions} fleet pages polling /fleet/rows", rows_cpu, rows_ms))
    print(row(f"+ {args.sessions} JSON listings /v1/devices", json_cpu, json_ms))
    if rows_ms and json_ms:
        ratio = ((rows_cpu - quiet) / len(rows_ms)) / max(1e-9, (json_cpu - quiet) / len(json_ms))
        print(f"\nextra relay CPU per fleet-page poll / per JSON listing: {ratio:.2f}×")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
