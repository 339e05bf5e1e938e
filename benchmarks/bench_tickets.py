"""Help request → ticket visible to a technician, over a real relay (target ≤ 100 ms).

Run: ``python -m benchmarks.bench_tickets [--runs N]``. A real ``posassist-relay serve``
subprocess (SQLite, as shipped) on 127.0.0.1; the agent is this process on a real websocket
(protocol.Session), the technician polls ``GET /v1/tickets?state=new`` back to back on one HTTP
connection. Baselines in the same run: a heartbeat round trip on the same agent connection
(websocket + relay, no database) and ``GET /v1/devices`` (the API's cost with no ticket work).
Each ticket is accepted and resolved (untimed) before the next, so the device stays under its
open-ticket cap. Bounded: N runs, 10 s each at most. Prints a markdown table; never a test.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import ClientSession
from websockets.asyncio.client import connect

from posassist.protocol import messages as m
from tests.e2e.cli import admin_token, enrol_over_http, invite, provision, start_relay, stop
from tests.relay.harness import agent_handshake, recv, send

M = TypeVar("M", bound=m.Message)


def _ms(seconds: float) -> float:
    return seconds * 1000


async def _run(
    url: str, store: str, data: Path, runs: int, database: str
) -> dict[str, list[float]]:
    device_id, key = await enrol_over_http(url, invite(data, store, url, database))
    token = await admin_token(url)
    http_base = url.replace("ws://", "http://")
    headers = {"Authorization": f"Bearer {token}"}
    results: dict[str, list[float]] = {"opened": [], "visible": [], "heartbeat": [], "devices": []}
    async with connect(url + "/v1/agent") as ws, ClientSession(headers=headers) as http:
        session, accepted = await agent_handshake(ws, device_id, key)
        assert isinstance(accepted, m.AuthAccepted), accepted

        async def get(path: str) -> Any:
            async with http.get(http_base + path) as response:
                assert response.status == 200, await response.text()
                return await response.json()

        async def post(path: str) -> None:
            async with http.post(http_base + path, json={}) as response:
                assert response.status == 200, await response.text()

        for i in range(runs):
            async with asyncio.timeout(10):
                # baseline 1: a heartbeat through the relay and back
                start = time.perf_counter()
                session.send(m.Heartbeat(seq=i, sent_at=time.time()))
                await send(ws, session)
                await _until(ws, session, m.HeartbeatAck)
                results["heartbeat"].append(_ms(time.perf_counter() - start))
                # baseline 2: an API call of the same shape without tickets
                start = time.perf_counter()
                await get("/v1/devices")
                results["devices"].append(_ms(time.perf_counter() - start))
                # the help request, until a technician's listing shows it
                start = time.perf_counter()
                session.send(
                    m.HelpRequested(
                        id=session.next_id(),
                        device_id=device_id,
                        category="printer",
                        description=f"打印机不出纸 #{i}",
                    )
                )
                await send(ws, session)
                listing = asyncio.ensure_future(_until_listed(get, start))
                opened = await _until(ws, session, m.TicketOpened)
                results["opened"].append(_ms(time.perf_counter() - start))
                seen_code, seen_at = await listing
                assert seen_code == opened.support_code
                results["visible"].append(_ms(seen_at - start))
                await post(f"/v1/tickets/{opened.support_code}/accept")
                await post(f"/v1/tickets/{opened.support_code}/resolve")
                await _until(ws, session, m.TicketUpdated, count=2)  # accept's, resolve's
    return results


async def _until(ws: Any, session: Any, kind: type[M], count: int = 1) -> M:
    """Read until ``count`` messages of ``kind`` arrived; the last of them."""
    seen: list[M] = []
    while len(seen) < count:
        seen += [e for e in await recv(ws, session) if isinstance(e, kind)]
    return seen[count - 1]


async def _until_listed(get: Any, start: float) -> tuple[str, float]:
    while True:
        tickets = (await get("/v1/tickets?state=new"))["tickets"]
        if tickets:
            return tickets[0]["code"], time.perf_counter()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument(
        "--database", default="", help="an empty PostgreSQL database's URL (default: SQLite)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "relay"
        store = provision(data, args.database)
        extra = ("--database", args.database) if args.database else ()
        proc, url = start_relay(data, *extra)
        try:
            results = asyncio.run(_run(url, store, data, args.runs, args.database))
        finally:
            stop(proc)

    def row(label: str, values: list[float]) -> str:
        ordered = sorted(values)
        p95 = ordered[max(0, round(0.95 * len(ordered)) - 1)]
        return (
            f"| {label} | {len(values)} | {statistics.median(values):.1f} | {p95:.1f} | "
            f"{max(values):.1f} |"
        )

    backend = "PostgreSQL" if args.database else "SQLite"
    print(f"## help request → ticket visible to a technician ({args.runs} runs, {backend})\n")
    print("| path | runs | median ms | p95 ms | max ms |")
    print("|---|---|---|---|---|")
    print(row("baseline: heartbeat round trip through the relay", results["heartbeat"]))
    print(row("baseline: `GET /v1/devices` (API, no tickets)", results["devices"]))
    print(row("help.requested → ticket.opened at the agent", results["opened"]))
    print(row("help.requested → in a technician's `GET /v1/tickets`", results["visible"]))
    worst = statistics.median(results["visible"])  # the technician polls back to back
    print(f"\ntarget ≤ 100 ms: {'met' if worst <= 100 else 'MISSED'} (median {worst:.1f} ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
