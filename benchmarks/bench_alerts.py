"""Alert events ingested per second by a real relay, on SQLite and on PostgreSQL, beside a
baseline in the same run: the same connections and pipelining, with heartbeats (answered by the
relay without touching the database) instead of alert events.

Run from the repository root: ``python -m benchmarks.bench_alerts [--events N] [--agents A]``.
Prints a markdown table; compare ratios within one run, these VMs are noisy. Never a test.

Each of A agents (enrolled devices, real websockets, ``protocol.Session``) sends its share of
the N events with up to ``WINDOW`` unanswered, as an agent's outbox would after an outage. The
events cycle over ten checks with rising agent times, so most update an open alert and one in
ten resolves one (every one audited, in one transaction with its idempotency key); a second pass
sends the same events again (all duplicates: one read each). A webhook is configured, with its
receiver down, so changes also queue deliveries, as in production.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import sys
import time
from typing import TYPE_CHECKING

from websockets.asyncio.client import connect

from posassist.protocol import messages as m
from tests.e2e.cli import enrol_over_http, invite, provision, start_relay, stop
from tests.relay.harness import agent_handshake, recv, send

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

    from posassist.protocol.signing import Ed25519PrivateKey

WINDOW = 32
CHECKS = [f"check-{i}" for i in range(10)]
PG_URL = os.environ.get("POSASSIST_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")


def events(device: int, count: int) -> list[m.AlertRaised]:
    out = []
    for i in range(count):
        state = "resolved" if i % 10 == 9 else "firing"
        out.append(
            m.AlertRaised(
                id=1,
                device_id="dev_x",
                alert_key=f"d{device}-e{i}",
                check_name=CHECKS[i % len(CHECKS)],
                severity="critical",
                state=state,
                summary="bench / 测试",
                observed_at=1_700_000_000.0 + i,
                details={"finding": "bench", "clock_offset": 0.0},
            )
        )
    return out


async def pump(url: str, device_id: str, key: Ed25519PrivateKey, messages: list[m.Message]) -> int:
    """Send ``messages`` (alert events or heartbeats) with up to WINDOW unanswered; answers."""
    answered = 0
    async with connect(url + "/v1/agent", max_size=None) as ws:
        session, accepted = await agent_handshake(ws, device_id, key)
        assert isinstance(accepted, m.AuthAccepted), accepted
        pending = list(messages)
        in_flight = 0
        while pending or in_flight:
            while pending and in_flight < WINDOW:
                msg = pending.pop(0)
                session.send(msg.with_id(session.next_id()) if hasattr(msg, "id") else msg)
                in_flight += 1
            await send(ws, session)
            for answer in await recv(ws, session, timeout=60):
                if isinstance(answer, m.AlertAcknowledged | m.HeartbeatAck):
                    answered += 1
                    in_flight -= 1
                elif isinstance(answer, m.ErrorReply):
                    raise AssertionError(f"refused: {answer}")
    return answered


async def timed(
    url: str, fleet: list[tuple[str, Ed25519PrivateKey]], batches: list[list[m.Message]]
) -> float:
    """Messages answered per second, all agents at once."""
    started = time.perf_counter()
    counts = await asyncio.gather(
        *(pump(url, d, k, batch) for (d, k), batch in zip(fleet, batches, strict=True))
    )
    elapsed = time.perf_counter() - started
    assert sum(counts) == sum(map(len, batches))
    return sum(counts) / elapsed


async def one_backend(tmp: Path, database: str, n_events: int, n_agents: int) -> dict[str, float]:
    data = tmp / ("pg" if database else "sqlite")
    store = provision(data, database)
    extra = ("--database", database) if database else ()
    log = (tmp / f"{data.name}.log").open("w")
    proc, url = start_relay(data, *extra, "--heartbeat", "3600", "--webhook-allow-private", log=log)
    try:
        fleet = [
            await enrol_over_http(url, invite(data, store, url, database)) for _ in range(n_agents)
        ]
        await _webhook(url, data, store, database)
        per = n_events // n_agents
        beats: list[list[m.Message]] = [
            [m.Heartbeat(seq=i, sent_at=time.time()) for i in range(per)] for _ in fleet
        ]
        alerts: list[list[m.Message]] = [list(events(i, per)) for i in range(n_agents)]
        result = {"baseline": await timed(url, fleet, beats)}
        result["ingest"] = await timed(url, fleet, alerts)
        result["duplicates"] = await timed(url, fleet, alerts)
        result["baseline_after"] = await timed(url, fleet, beats)
        latencies = await webhook_latency(url, data, store, database, fleet[0], rounds=20)
        result["latency_p50"] = sorted(latencies)[len(latencies) // 2]
        result["latency_max"] = max(latencies)
        return result
    finally:
        stop(proc)
        log.close()


async def webhook_latency(
    url: str,
    data: Path,
    store: str,
    database: str,
    agent: tuple[str, Ed25519PrivateKey],
    rounds: int,
) -> list[float]:
    """Seconds from an agent sending a firing ``alert.raised`` (a new alert) to its signed
    ``alert.opened`` arriving at a receiver on 127.0.0.1, one at a time: the relay's part of
    "paper out → webhook" (the agent's check interval comes on top)."""
    from aiohttp import web

    arrived: dict[str, float] = {}
    got = asyncio.Event()

    async def receive(request: web.Request) -> web.Response:
        body = await request.json()
        if body["type"] == "alert.opened":
            arrived[body["alert"]["check"]] = time.perf_counter()
            got.set()
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", receive)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        await _webhook(
            url, data, store, database, f"http://127.0.0.1:{runner.addresses[0][1]}/hook"
        )
        device_id, key = agent
        took = []
        async with connect(url + "/v1/agent") as ws:
            session, accepted = await agent_handshake(ws, device_id, key)
            assert isinstance(accepted, m.AuthAccepted)
            for i in range(rounds):
                check = f"latency-{i}"
                got.clear()
                sent = time.perf_counter()
                session.send(
                    m.AlertRaised(
                        id=session.next_id(),
                        device_id=device_id,
                        alert_key=f"latency-{i}",
                        check_name=check,
                        severity="critical",
                        state="firing",
                        summary="paper out / 缺纸",
                        observed_at=time.time(),
                    )
                )
                await send(ws, session)
                async with asyncio.timeout(30):
                    while check not in arrived:
                        await got.wait()
                        got.clear()
                took.append(arrived[check] - sent)
                await recv(ws, session)  # its alert.ack
        return took
    finally:
        await runner.cleanup()


async def _webhook(
    url: str, data: Path, store: str, database: str, target: str = "http://127.0.0.1:9/down"
) -> None:
    """A merchant webhook; by default one whose receiver is down (deliveries queue and retry,
    as in life)."""
    import sqlalchemy as sa
    from aiohttp import ClientSession

    from posassist.relay.storage import open_storage
    from posassist.relay.storage.schema import stores
    from tests.e2e.cli import admin_token

    storage = open_storage(database or f"sqlite:///{data / 'relay.db'}")
    try:
        query = sa.select(stores.c.merchant_id).where(stores.c.id == store)
        merchant = await storage.run_read(lambda conn: conn.execute(query).scalar())
    finally:
        await storage.close()
    token = await admin_token(url)
    body = {"scope_kind": "merchant", "scope_id": merchant, "url": target}
    async with (
        ClientSession() as http,
        http.post(
            url.replace("ws://", "http://") + "/v1/webhooks",
            json=body,
            headers={"Authorization": f"Bearer {token}"},
        ) as answer,
    ):
        assert answer.status == 201, await answer.text()


async def run(args: argparse.Namespace) -> int:
    import tempfile
    from pathlib import Path

    import asyncpg

    rows = {}
    with tempfile.TemporaryDirectory(prefix="bench-alerts-") as tmp:
        rows["SQLite (WAL, sync normal)"] = await one_backend(
            Path(tmp), "", args.events, args.agents
        )
        name = f"bench_alerts_{secrets.token_hex(4)}"
        admin = await asyncpg.connect(PG_URL, timeout=5)
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
            url = PG_URL.rsplit("/", 1)[0] + f"/{name}"
            rows["PostgreSQL (127.0.0.1)"] = await one_backend(
                Path(tmp), url, args.events, args.agents
            )
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await admin.close()
    print(f"\n### Alert ingest: {args.events} events from {args.agents} agents, window {WINDOW}\n")
    print(
        "| backend | baseline: heartbeats/s (no database) | alert events/s | duplicates/s "
        "| ingest / baseline | alert.raised → signed webhook, p50 / max |"
    )
    print("|---|---|---|---|---|---|")
    for backend, r in rows.items():
        base = (r["baseline"] + r["baseline_after"]) / 2
        print(
            f"| {backend} | {base:,.0f} | {r['ingest']:,.0f} | {r['duplicates']:,.0f} "
            f"| {r['ingest'] / base:.2f} "
            f"| {r['latency_p50'] * 1000:.1f} / {r['latency_max'] * 1000:.1f} ms |"
        )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_alerts")
    parser.add_argument("--events", type=int, default=8000, help="alert events per backend")
    parser.add_argument("--agents", type=int, default=8, help="agents sending at once")
    return asyncio.run(run(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
