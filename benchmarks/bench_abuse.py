"""Bad behaviour against a real relay process (issue 16): what the relay's limits do, measured.

Run from the repository root: ``python -m benchmarks.bench_abuse [--only NAME] [--quick]``.
Every scenario starts its own ``posassist-relay serve`` on SQLite (its limits at their defaults
unless said) and talks only to 127.0.0.1 (strangers come from their own loopback addresses,
127.3.x.y, as the fleet's stores do):

- **never-sign-in**: 5,000 connections that never sign in, half a bare TCP socket, half an
  upgraded ``/v1/agent`` websocket that never says hello: how many the relay holds and refuses
  at once (its caps), how long it takes to drop the held ones (its deadlines), its RSS while
  they are held; then again with the caps lifted (``--max-unauthenticated 8192``, no
  per-address cap) to hold all 5,000: memory per held stranger.
- **stuck-agents**: 100 enrolled agents sign in and then stop reading and writing (a frozen
  till) while 200 fleet tills carry on; technicians send diagnostics to the stuck ones while a
  console measures round trips to a healthy one: p50/p99 with and without the stuck agents,
  what the stuck requests got, and how long until the relay drops them (heartbeat 5 s here).
- **flood-one-address**: from one address, (a) 2,000 sign-ins of an unknown device (a
  stranger guessing), 50 at a time: answered ``auth.refused``, HTTP 429 (the failed sign-in
  budget) or cut; (b) 1,000 bare connections held at once (the per-address cap); (c) a real
  till signing in again and again 300 times (nothing refuses a till that signs in).
- **big-replies**: 100 tills answer diagnostics with 1 MB reports; a console asks all of them
  at once and reads (time, relay peak RSS); then consoles ask and stop reading: the relay's
  peak RSS, and whether it sheds those consoles (4008) while a healthy console's round trip
  to another till still answers.

Bounded: fixed counts, every wait has a deadline. Not a test: no assertion on timing; the
guarantees behind these figures are tested in tests/relay/ (test_limits.py,
test_outbox_bytes.py). Prints markdown; ``--json FILE`` writes the raw figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks.harness import (
    Fleet,
    PeakRss,
    Relay,
    Tokens,
    calibrate,
    cpu_seconds,
    device_ids,
    enrol,
    launch_relay,
    make_tokens,
    percentile,
    relay_fanout,
    settle,
    till_folders,
)
from tests.e2e.cli import provision, start_relay

if TYPE_CHECKING:
    from collections.abc import Sequence

#: How long one never-signing-in connection is watched before it counts as "still held".
WATCH_LIMIT = 60.0
UPGRADE = (
    b"GET /v1/agent HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
    b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\n\r\n"
)


def stranger_address(index: int) -> str:
    """A loopback address of its own for stranger ``index`` (127.3.0.1 onwards)."""
    mid, low = divmod(index, 250)
    return f"127.3.{mid}.{low + 1}"


def relay_for(work: Path, name: str, *extra: str) -> Relay:
    data = work / name / "relay"
    return launch_relay(data, provision(data), options=extra)


def ms(values: Sequence[float], q: float) -> float:
    return round(percentile(values, q) * 1000, 2) if values else 0.0


# --- never signing in ---------------------------------------------------------------------------


async def _hold_one(
    port: int, index: int, upgrade: bool, spread: bool, gate: asyncio.Semaphore
) -> tuple[str, float]:
    """Open one connection that never signs in, and read until the relay hangs up. What it
    got: ``refused`` (closed with no answer, well before any deadline: a cap), ``HTTP 503`` /
    ``HTTP 429`` (answered and closed: load shedding, a budget), ``dropped`` (closed at a
    deadline, after 5 s or more), ``held`` (still open at the limit), ``failed`` (not opened);
    and the seconds from opening to the end."""
    local = (stranger_address(index), 0) if spread else ("127.0.0.1", 0)
    started = time.monotonic()
    try:
        async with gate:  # paces the opening; the connection is then held without it
            reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=local)
    except OSError:
        return "failed", time.monotonic() - started
    opened = time.monotonic()
    first = b""
    try:
        if upgrade:
            writer.write(UPGRADE)
        async with asyncio.timeout(WATCH_LIMIT):
            while chunk := await reader.read(65536):
                first = first or chunk  # the answer's status line, then the close frame
    except TimeoutError:
        return "held", time.monotonic() - opened
    except OSError:
        pass  # reset: closed by the relay all the same
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    took = time.monotonic() - opened
    status = first.split(b"\r\n", 1)[0].split(b" ")[1:2]
    if status and status[0] in (b"503", b"429"):
        return f"HTTP {status[0].decode()}", took
    return ("dropped" if took >= DEADLINE_SEEN else "refused"), took


#: A connection closed this long after it opened was closed at a deadline (10 s by default),
#: not refused at once (which may take a moment when thousands wait to be accepted).
DEADLINE_SEEN = 5.0


async def _strangers(port: int, n: int, upgrade: bool, spread: bool) -> list[tuple[str, float]]:
    gate = asyncio.Semaphore(500)  # connections being opened at once
    return list(
        await asyncio.gather(*(_hold_one(port, i, upgrade, spread, gate) for i in range(n)))
    )


def never_sign_in(work: Path, n: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for label, extra in (
        ("default caps (1024 in all, 256 per address)", ()),
        (
            "caps lifted (8192, none per address)",
            ("--max-unauthenticated", "8192", "--max-unauthenticated-per-address", "0"),
        ),
    ):
        relay = relay_for(work, f"never-{len(rows)}", *extra)
        try:
            idle = settle(relay.pid, 1.0)
            for upgrade in (False, True):
                peak = PeakRss(relay.pid)
                start = time.monotonic()
                results = asyncio.run(_strangers(relay.port, n, upgrade, spread=True))
                wall = time.monotonic() - start
                top = peak.stop()
                counts = {k: sum(1 for kind, _ in results if kind == k) for k in _KINDS}
                dropped = [s for kind, s in results if kind == "dropped"]
                held_most = min(n, counts["dropped"] + counts["held"])
                rows.append(
                    {
                        "limits": label,
                        "kind": "websocket, no hello" if upgrade else "bare TCP, no request",
                        "attempted": n,
                        **counts,
                        "drop_s_min": round(min(dropped), 2) if dropped else None,
                        "drop_s_median": round(statistics.median(dropped), 2) if dropped else None,
                        "drop_s_max": round(max(dropped), 2) if dropped else None,
                        "idle_mb": round(idle, 1),
                        "peak_mb": round(top, 1),
                        "kb_per_held": round((top - idle) * 1024 / held_most, 1)
                        if held_most
                        else None,
                        "after_mb": round(settle(relay.pid, 2.0), 1),
                        "wall_s": round(wall, 1),
                    }
                )
                print(f"never-sign-in {label} {rows[-1]['kind']}: {counts}", flush=True)
        finally:
            relay.stop()
    return rows


_KINDS = ("refused", "HTTP 503", "HTTP 429", "dropped", "held", "failed")


# --- stuck agents -----------------------------------------------------------------------------


async def _rtts(url: str, tokens: Tokens, device: str, n: int, pace: float) -> list[float]:
    from posassist.console.connection import ConsoleConnection
    from posassist.protocol import DiagnosticsReport, DiagnosticsRequest

    out: list[float] = []
    async with ConsoleConnection.open(url, tokens.take()) as console:
        for _ in range(n):
            request = DiagnosticsRequest(
                id=console.session.next_id(), device_id=device, collectors=("printer",)
            )
            start = time.perf_counter()
            replies = [r async for r in console.request(request, 30.0)]
            if isinstance(replies[-1], DiagnosticsReport):
                out.append(time.perf_counter() - start)
            await asyncio.sleep(pace)  # paced under the technician's 20/s limit
    return out


async def _stuck_agent(url: str, folder: Path) -> Any:
    """Sign in as the till in ``folder``, then never read or write again (the socket kept)."""
    from websockets.asyncio.client import connect

    from posassist.relay.fleet import load_identity
    from tests.relay.harness import agent_handshake

    identity = load_identity(folder)
    ws = await connect(url + "/v1/agent", max_queue=1, close_timeout=1)
    _, answer = await agent_handshake(ws, identity.device_id, identity.key)
    if type(answer).__name__ != "AuthAccepted":
        raise RuntimeError(f"stuck agent not accepted: {answer!r}")
    ws.transport.pause_reading()  # stops reading: the relay's frames pile up towards it
    return ws


async def _ask_stuck(url: str, tokens: Tokens, devices: Sequence[str]) -> dict[str, int]:
    """Diagnostics to each stuck device (one console per 40); the replies they got."""
    from posassist.console.connection import ConsoleConnection
    from posassist.protocol import DiagnosticsRequest

    outcomes: dict[str, int] = {}

    async def one(console: Any, device: str) -> None:
        request = DiagnosticsRequest(id=console.session.next_id(), device_id=device, timeout=8.0)
        try:
            replies = [r async for r in console.request(request, 30.0)]
            last = replies[-1]
            kind = getattr(last, "code", type(last).__name__)
        except (TimeoutError, OSError) as exc:
            kind = type(exc).__name__
        outcomes[kind] = outcomes.get(kind, 0) + 1

    groups = [devices[i : i + 40] for i in range(0, len(devices), 40)]
    async with contextlib.AsyncExitStack() as stack:
        consoles = [
            await stack.enter_async_context(ConsoleConnection.open(url, tokens.take()))
            for _ in groups
        ]
        await asyncio.gather(
            *(one(c, d) for c, group in zip(consoles, groups, strict=True) for d in group)
        )
    return outcomes


def _agents_online(relay: Relay) -> int:
    http = relay.url.replace("ws://", "http://")
    with urllib.request.urlopen(http + "/healthz", timeout=5) as answer:
        return int(json.loads(answer.read())["agents"])


def stuck_agents(work: Path, healthy: int, stuck: int, rtt_n: int) -> dict[str, Any]:
    data = work / "stuck" / "relay"
    store = provision(data)
    tokens = Tokens(asyncio.run(make_tokens(data, store, 16)))
    log = (data.parent / "relay.log").open("a")
    proc, url = start_relay(data, "--heartbeat", "5", log=log)
    relay = Relay(data, store, proc, url, log)  # type: ignore[arg-type]
    ids = work / "stuck" / "ids"
    fleet = None
    try:
        enrol(relay, ids, healthy + stuck)
        devices = device_ids(ids)
        fleet = Fleet(relay, ids, 0, healthy, 900.0)
        fleet.wait_all_connected(0, 300)
        before = asyncio.run(_rtts(relay.url, tokens, devices[0], rtt_n, 0.06))
        folders = till_folders(ids)[healthy:]

        async def scenario() -> dict[str, Any]:
            sockets = [await _stuck_agent(relay.url, f) for f in folders]
            stuck_at = time.monotonic()
            rtt_task = asyncio.ensure_future(_rtts(relay.url, tokens, devices[0], rtt_n, 0.06))
            outcomes = await _ask_stuck(relay.url, tokens, devices[healthy:])
            during = await rtt_task
            dropped_after = None
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:  # polls /healthz: nothing to await
                online = await asyncio.to_thread(_agents_online, relay)
                if online <= healthy:
                    dropped_after = time.monotonic() - stuck_at
                    break
                await asyncio.sleep(0.25)
            for ws in sockets:
                ws.transport.abort()
            return {"outcomes": outcomes, "during": during, "dropped_after": dropped_after}

        peak = PeakRss(relay.pid)
        result = asyncio.run(scenario())
        return {
            "healthy": healthy,
            "stuck": stuck,
            "rtt_before_p50_ms": ms(before, 0.5),
            "rtt_before_p99_ms": ms(before, 0.99),
            "rtt_during_p50_ms": ms(result["during"], 0.5),
            "rtt_during_p99_ms": ms(result["during"], 0.99),
            "rtt_during_answered": len(result["during"]),
            "rtt_n": rtt_n,
            "stuck_requests": result["outcomes"],
            "stuck_dropped_after_s": round(result["dropped_after"], 1)
            if result["dropped_after"] is not None
            else None,
            "heartbeat_s": 5.0,
            "peak_mb": round(peak.stop(), 1),
            "healthy_still_connected": fleet.total_connected(),
        }
    finally:
        if fleet is not None:
            fleet.stop()
        relay.stop()


# --- one address flooding -----------------------------------------------------------------------


async def _bad_sign_ins(url: str, n: int) -> dict[str, int]:
    from websockets.asyncio.client import connect
    from websockets.exceptions import InvalidStatus

    from posassist.protocol import signing
    from tests.relay.harness import agent_handshake

    key = signing.generate_private_key()
    outcomes: dict[str, int] = {}
    gate = asyncio.Semaphore(50)

    async def one(i: int) -> None:
        async with gate:
            try:
                async with connect(
                    url + "/v1/agent", local_addr=("127.4.0.1", 0), close_timeout=1
                ) as ws:
                    _, answer = await agent_handshake(ws, f"dev_guess{i:06d}", key)
                    kind = f"auth.refused {getattr(answer, 'code', '')}".strip()
            except InvalidStatus as exc:
                kind = f"HTTP {exc.response.status_code}"
            except (OSError, TimeoutError, Exception) as exc:  # cut: counted by kind
                kind = type(exc).__name__
            outcomes[kind] = outcomes.get(kind, 0) + 1

    await asyncio.gather(*(one(i) for i in range(n)))
    return outcomes


async def _same_till_again(url: str, folder: Path, n: int) -> dict[str, Any]:
    from websockets.asyncio.client import connect

    from posassist.relay.fleet import load_identity
    from tests.relay.harness import agent_handshake

    identity = load_identity(folder)
    accepted = 0
    start = time.perf_counter()
    for _ in range(n):
        async with connect(url + "/v1/agent", local_addr=("127.4.0.2", 0), close_timeout=1) as ws:
            _, answer = await agent_handshake(ws, identity.device_id, identity.key)
            accepted += type(answer).__name__ == "AuthAccepted"
    return {"attempted": n, "accepted": accepted, "seconds": round(time.perf_counter() - start, 2)}


def flood_one_address(work: Path, bad: int, held: int, again: int) -> dict[str, Any]:
    relay = relay_for(work, "flood")
    ids = work / "flood" / "ids"
    try:
        enrol(relay, ids, 1)
        cpu0, t0 = cpu_seconds(relay.pid), time.perf_counter()
        guesses = asyncio.run(_bad_sign_ins(relay.url, bad))
        guess_cpu, guess_s = cpu_seconds(relay.pid) - cpu0, time.perf_counter() - t0
        results = asyncio.run(_strangers(relay.port, held, upgrade=False, spread=False))
        counts = {k: sum(1 for kind, _ in results if kind == k) for k in _KINDS}
        folder = till_folders(ids)[0]
        cpu1 = cpu_seconds(relay.pid)
        till = asyncio.run(_same_till_again(relay.url, folder, again))
        till["relay_cpu_ms_each"] = round((cpu_seconds(relay.pid) - cpu1) * 1000 / again, 2)
        return {
            "bad_sign_ins": bad,
            "bad_outcomes": guesses,
            "bad_seconds": round(guess_s, 2),
            "bad_relay_cpu_ms_each": round(guess_cpu * 1000 / bad, 2),
            "held_from_one_address": held,
            "held_outcomes": counts,
            "same_till": till,
        }
    finally:
        relay.stop()


# --- big replies --------------------------------------------------------------------------------


async def _fan_out_unread(
    url: str, tokens: Tokens, devices: Sequence[str], healthy: str, rtt_n: int
) -> dict[str, Any]:
    """Consoles that ask every device for its report and never read; meanwhile round trips to
    ``healthy`` from a console that reads. How the non-reading consoles end (close code)."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    from posassist.protocol import DiagnosticsRequest
    from tests.relay.harness import console_handshake, send

    groups = [devices[i : i + 40] for i in range(0, len(devices), 40)]
    sockets = []
    for group in groups:
        ws = await connect(url + "/v1/console", max_queue=1, max_size=2**21, close_timeout=1)
        session, _ = await console_handshake(ws, tokens.take())
        for device in group:
            session.send(DiagnosticsRequest(id=session.next_id(), device_id=device))
        await send(ws, session)
        ws.transport.pause_reading()
        sockets.append(ws)
    start = time.monotonic()
    during = await _rtts(url, tokens, healthy, rtt_n, 0.06)
    codes: dict[str, int] = {}
    for ws in sockets:
        ws.transport.resume_reading()
        try:
            async with asyncio.timeout(30):
                while True:
                    await ws.recv()
        except ConnectionClosed as exc:
            code = str(exc.rcvd.code) if exc.rcvd is not None else "no close frame"
            codes[code] = codes.get(code, 0) + 1
        except TimeoutError:
            codes["still open after 30 s"] = codes.get("still open after 30 s", 0) + 1
            await ws.close()
    return {
        "consoles": len(sockets),
        "rtt_during_p50_ms": ms(during, 0.5),
        "rtt_during_p99_ms": ms(during, 0.99),
        "rtt_answered": len(during),
        "rtt_n": rtt_n,
        "console_close_codes": codes,
        "seconds": round(time.monotonic() - start, 1),
    }


def big_replies(work: Path, agents: int, size: int, rtt_n: int) -> dict[str, Any]:
    data = work / "big" / "relay"
    store = provision(data)
    tokens = Tokens(asyncio.run(make_tokens(data, store, 16)))
    log = (data.parent / "relay.log").open("a")
    proc, url = start_relay(data, log=log)
    relay = Relay(data, store, proc, url, log)  # type: ignore[arg-type]
    ids = work / "big" / "ids"
    fleets: list[Fleet] = []
    try:
        enrol(relay, ids, agents + 1)
        devices = device_ids(ids)
        fleets.append(Fleet(relay, ids, 0, agents, 900.0, extra=["--diag-bytes", str(size)]))
        fleets.append(Fleet(relay, ids, agents, 1, 900.0))  # the healthy, small one
        for f in fleets:
            f.wait_all_connected(0, 300)
        idle = settle(relay.pid, 1.0)
        peak = PeakRss(relay.pid)
        seconds, answered = asyncio.run(
            relay_fanout(relay.url, tokens, devices[:agents], wait=60.0, every_answer=False)
        )
        reading_peak = peak.stop()
        after_reading = settle(relay.pid, 2.0)
        peak = PeakRss(relay.pid)
        unread = asyncio.run(
            _fan_out_unread(relay.url, tokens, devices[:agents], devices[agents], rtt_n)
        )
        unread_peak = peak.stop()
        return {
            "agents": agents,
            "reply_bytes": size,
            "idle_mb": round(idle, 1),
            "read_seconds": round(seconds, 2),
            "read_answered": answered,
            "read_peak_mb": round(reading_peak, 1),
            "after_read_mb": round(after_reading, 1),
            "unread": unread,
            "unread_peak_mb": round(unread_peak, 1),
            "after_unread_mb": round(settle(relay.pid, 2.0), 1),
        }
    finally:
        for f in fleets:
            f.stop()
        relay.stop()


# --- report -------------------------------------------------------------------------------------


def markdown(res: dict[str, Any]) -> str:
    out = []
    if "never_sign_in" in res:
        out += [
            "### Connections that never sign in",
            "",
            "| limits | kind | attempted | refused at once | 503 (shed) | dropped at a deadline "
            "| drop after s (min/median/max) | still held at 60 s | relay MB idle → peak → after "
            "| KB per held |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in res["never_sign_in"]:
            out.append(
                f"| {r['limits']} | {r['kind']} | {r['attempted']} | {r['refused']} | "
                f"{r['HTTP 503']} | {r['dropped']} | "
                f"{r['drop_s_min']}/{r['drop_s_median']}/{r['drop_s_max']} | "
                f"{r['held']} | {r['idle_mb']} → {r['peak_mb']} → {r['after_mb']} | "
                f"{r['kb_per_held']} |"
            )
        out.append("")
    if "stuck_agents" in res:
        s = res["stuck_agents"]
        out += [
            "### Agents that stop reading (and writing)",
            "",
            f"{s['healthy']} fleet tills connected, {s['stuck']} agents signed in and then "
            f"frozen; relay heartbeat {s['heartbeat_s']:g} s. Round trips: a `printer` "
            f"diagnostic to a healthy till, {s['rtt_n']} paced every 60 ms.",
            "",
            "| | p50 ms | p99 ms |",
            "|---|---|---|",
            f"| healthy till, before | {s['rtt_before_p50_ms']} | {s['rtt_before_p99_ms']} |",
            f"| healthy till, while technicians ask the stuck ones | {s['rtt_during_p50_ms']} | "
            f"{s['rtt_during_p99_ms']} ({s['rtt_during_answered']}/{s['rtt_n']} answered) |",
            "",
            f"Requests to the stuck agents ended: {s['stuck_requests']}. The relay dropped all "
            f"{s['stuck']} stuck agents {s['stuck_dropped_after_s']} s after they froze; "
            f"{s['healthy_still_connected']} healthy tills still connected; relay peak "
            f"{s['peak_mb']} MB.",
            "",
        ]
    if "flood_one_address" in res:
        f = res["flood_one_address"]
        t = f["same_till"]
        out += [
            "### A flood from one address",
            "",
            f"- {f['bad_sign_ins']} sign-ins of unknown devices, 50 at a time: {f['bad_outcomes']}"
            f" in {f['bad_seconds']} s; relay CPU {f['bad_relay_cpu_ms_each']} ms per attempt.",
            f"- {f['held_from_one_address']} bare connections held at once from one address: "
            f"{f['held_outcomes']}.",
            f"- one real till signing in {t['attempted']} times in a row: {t['accepted']} "
            f"accepted in {t['seconds']} s, relay CPU {t['relay_cpu_ms_each']} ms each.",
            "",
        ]
    if "big_replies" in res:
        b = res["big_replies"]
        u = b["unread"]
        out += [
            "### 1 MB diagnostics replies from many agents at once",
            "",
            f"{b['agents']} tills each answer with a {b['reply_bytes']:,}-byte report.",
            "",
            "| | seconds | relay MB (idle before → peak → after) |",
            "|---|---|---|",
            f"| one console per 40 tills asks all, and reads | {b['read_seconds']} "
            f"({b['read_answered']} answered) | {b['idle_mb']} → {b['read_peak_mb']} → "
            f"{b['after_read_mb']} |",
            f"| {u['consoles']} consoles ask all, and stop reading | {u['seconds']} | "
            f"{b['after_read_mb']} → {b['unread_peak_mb']} → {b['after_unread_mb']} |",
            "",
            f"The non-reading consoles ended with close codes {u['console_close_codes']}; "
            f"meanwhile a reading console's round trip to another till: p50 "
            f"{u['rtt_during_p50_ms']} ms, p99 {u['rtt_during_p99_ms']} ms "
            f"({u['rtt_answered']}/{u['rtt_n']} answered).",
            "",
        ]
    return "\n".join(out)


SCENARIOS = ("never-sign-in", "stuck-agents", "flood-one-address", "big-replies")


def run_scenarios(
    work: Path, chosen: Sequence[str] = SCENARIOS, *, quick: bool = False
) -> dict[str, Any]:
    """The chosen scenarios' figures (a tenth of the counts with ``quick``)."""
    work.mkdir(parents=True, exist_ok=True)
    k = 10 if quick else 1
    res: dict[str, Any] = {}
    if "never-sign-in" in chosen:
        res["never_sign_in"] = never_sign_in(work, 5000 // k)
    if "stuck-agents" in chosen:
        res["stuck_agents"] = stuck_agents(work, 200 // k, 100 // k, 200 // k)
    if "flood-one-address" in chosen:
        res["flood_one_address"] = flood_one_address(work, 2000 // k, 1000 // k, 300 // k)
    if "big-replies" in chosen:
        res["big_replies"] = big_replies(work, 100 // k, 1_000_000, 100 // k)
    return res


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--only", choices=SCENARIOS, action="append", help="run only these")
    p.add_argument("--quick", action="store_true", help="a tenth of the counts: a smoke run")
    p.add_argument("--json", type=Path, help="write the raw figures here")
    args = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="posassist-abuse-"))
    res: dict[str, Any] = {"calibration": [calibrate()]}
    res |= run_scenarios(work, args.only or SCENARIOS, quick=args.quick)
    res["calibration"].append(calibrate())
    print(f"calibration {res['calibration'][0]:.3f} s at start, {res['calibration'][1]:.3f} at end")
    print(markdown(res))
    if args.json is not None:
        args.json.write_text(json.dumps(res, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
