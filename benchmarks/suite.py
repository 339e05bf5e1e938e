"""The capacity suite behind ``make bench``: a real relay process and posassist-fleet stores.

Run from the repository root: ``python -m benchmarks.suite [--quick]``. Writes
``benchmarks/results/<date>.md`` (tables) and PNG plots beside it, and prints the tables.

What runs, all on 127.0.0.1 (the fleet gives each store its own loopback address):

- **calibration**: a fixed pure-Python CPU loop, timed at the start and at the end, so runs on
  noisy machines can be compared (and a run whose machine changed speed midway is visible).
- **idle**: ``posassist-relay serve`` on SQLite with no agents, RSS after start (repeated);
  the bare aiohttp forwarder (benchmarks/bench_relay.py ``--serve-baseline``) likewise.
- **scaling**: authenticated fleet agents added in steps up to the largest count the fd limit
  allows; at each step the relay's RSS (KB per agent) and the round trip console → relay →
  agent → console for a diagnostics request (back-to-back, repeated batches: p50/p90/p99).
  The forwarder's round trip and memory per held websocket are the baseline.
- **fan-out**: one console request to 20 and to 200 agents at once, until every reply is in;
  the baseline forwards the same frames over 20 / 200 bare pairs.
- **reconnect storm**: the relay restarted (SIGTERM, a new process on the same port) with N
  agents connected; agents authenticated over time, time until all are in, the relay's CPU
  seconds per handshake in that window (handshakes per core-second), and the agents' errors.

- **bad behaviour** (with ``--abuse``): benchmarks/bench_abuse.py's scenarios (connections
  that never sign in, agents that stop reading, a flood from one address, 1 MB replies).

Every figure is the median of repeated runs with min and max, except the largest storm and the
largest scaling step, which run once (they take minutes). Not a test: no assertion on timing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil  # type: ignore[import-untyped]

from benchmarks.bench_relay import start_baseline
from tests.e2e.cli import provision, start_relay

if TYPE_CHECKING:
    from collections.abc import Sequence

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
PASSWORD = "bench-password-0123"
#: Routed requests one technician sends before the next takes over (relay: 20/s, burst 50).
PER_CONSOLE = 40
#: Tills per fleet process (each process has the machine's fd limit too).
PER_PROCESS = 5000


# --- measuring helpers ------------------------------------------------------------------------


def calibrate(rounds: int = 5) -> float:
    """Seconds for a fixed pure-Python loop (the best of ``rounds``): the machine's speed now."""
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        total = 0
        for i in range(2_000_000):
            total += i * i % 7
        best = min(best, time.perf_counter() - start)
    return best


def spread(values: Sequence[float]) -> tuple[float, float, float]:
    """(median, min, max)."""
    return statistics.median(values), min(values), max(values)


def fmt(values: Sequence[float], unit: str = "", digits: int = 1) -> str:
    if not values:
        return "—"
    med, lo, hi = spread(values)
    if len(values) == 1:
        return f"{med:.{digits}f}{unit}"
    return f"{med:.{digits}f}{unit} ({lo:.{digits}f}–{hi:.{digits}f})"


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def rss_mb(pid: int) -> float:
    return float(psutil.Process(pid).memory_info().rss) / 2**20


def cpu_seconds(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def settle(pid: int, seconds: float = 2.0) -> float:
    """RSS once the process has been quiet for a moment (allocator, lazy work)."""
    time.sleep(seconds)  # a benchmark waits for a quiet process; tests wait on events
    return rss_mb(pid)


# --- the relay and the fleet ---------------------------------------------------------------


@dataclass
class Relay:
    data: Path
    store: str
    proc: subprocess.Popen[str]
    url: str
    log: Any

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def launch_relay(data: Path, store: str, port: int = 0, options: Sequence[str] = ()) -> Relay:
    log = (data.parent / "relay.log").open("a")
    extra = ["--port", str(port)] if port else []
    proc, url = start_relay(data, *extra, *options, log=log)
    return Relay(data, store, proc, url, log)  # type: ignore[arg-type]


async def make_tokens(data: Path, store: str, n: int) -> list[str]:
    """Technicians scoped to the store, each with a bearer token (before the relay starts)."""
    from posassist.relay.config import RelayConfig
    from posassist.relay.passwords import hash_password
    from posassist.relay.storage import Role, Scope, ScopeKind, open_storage

    storage = open_storage(RelayConfig.load(data).database)
    try:
        await storage.migrate()
        hashed, now, tokens = hash_password(PASSWORD), time.time(), []
        for i in range(n):
            scope = Scope(ScopeKind.STORE, store)
            user = await storage.create_user(f"bench{i}", hashed, Role.TECHNICIAN, scope, now=now)
            tokens.append(await storage.issue_token(user.id, now=now, ttl=24 * 3600))
    finally:
        await storage.close()
    return tokens


class Tokens:
    """Technicians' tokens, handed out in turn: each may send 50 requests in a burst, then 20/s
    (the relay's per-user limit), so no one technician is asked for more than PER_CONSOLE in a
    row and a token comes round again only after the others."""

    def __init__(self, tokens: Sequence[str]) -> None:
        self.tokens = list(tokens)
        self.next = 0

    def take(self) -> str:
        token = self.tokens[self.next % len(self.tokens)]
        self.next += 1
        return token


class Fleet:
    """A posassist-fleet subprocess and the events it printed (read by a thread)."""

    def __init__(
        self,
        relay: Relay,
        ids: Path,
        first: int,
        count: int,
        duration: float,
        alert_rate: float = 0.0,
        extra: Sequence[str] = (),
    ) -> None:
        processes = max(1, -(-count // PER_PROCESS))
        argv = [sys.executable, "-m", "posassist.relay.fleet", "--relay", relay.url]
        argv += ["--identities", str(ids), "--first", str(first), "--agents", str(count)]
        argv += ["--processes", str(processes), "--duration", str(duration)]
        argv += ["--alert-rate", str(alert_rate), *extra]
        self.count = count
        self.proc = subprocess.Popen(
            argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )
        self.events: list[dict[str, Any]] = []
        self.connected: dict[Any, int] = {}
        self.lock = threading.Condition()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                with self.lock:
                    self.events.append(event)
                    if event.get("event") in ("status", "done"):
                        self.connected[event["process"]] = int(event["connected"])
                    self.lock.notify_all()
        with self.lock:
            self.lock.notify_all()

    def total_connected(self) -> int:
        with self.lock:
            return sum(self.connected.values())

    def wait_all_connected(self, after: int, timeout: float) -> dict[str, Any]:
        """The first whole-fleet ``all_connected`` event past index ``after`` of the events."""
        deadline = time.monotonic() + timeout
        with self.lock:
            while True:
                for event in self.events[after:]:
                    if event.get("event") == "all_connected" and event.get("process") in (0, "all"):
                        return event
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    raise RuntimeError(f"fleet of {self.count}: not all connected in {timeout} s")
                self.lock.wait(min(left, 1.0))

    def errors_now(self) -> dict[str, int]:
        """Errors so far, summed over the processes' latest status lines."""
        latest: dict[Any, dict[str, int]] = {}
        with self.lock:
            for event in self.events:
                if event.get("event") in ("status", "done"):
                    latest[event["process"]] = event.get("errors", {})
        total: dict[str, int] = {}
        for errors in latest.values():
            for kind, n in errors.items():
                total[kind] = total.get(kind, 0) + int(n)
        return total

    def alert_ms(self) -> list[float]:
        """Every alert's send-to-ack milliseconds, from the processes' ``done`` lines."""
        with self.lock:
            return [x for e in self.events if e.get("event") == "done" for x in e["alert_ms"]]

    def mark(self) -> int:
        with self.lock:
            return len(self.events)

    def status_since(self, start: int) -> list[dict[str, Any]]:
        with self.lock:
            return [e for e in self.events[start:] if e.get("event") == "status"]

    def stop(self) -> dict[str, int]:
        """Stop; the agents' errors by kind over the whole run."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.reader.join(timeout=10)
        errors: dict[str, int] = {}
        for event in self.events:
            if event.get("event") == "done":
                for kind, n in event.get("errors", {}).items():
                    errors[kind] = errors.get(kind, 0) + int(n)
        return errors


def enrol(relay: Relay, ids: Path, n: int) -> float:
    """Enrol ``n`` tills through real one-time tokens (the fleet's own enrolment); seconds."""
    start = time.perf_counter()
    result = subprocess.run(
        [
            *(sys.executable, "-m", "posassist.relay.fleet", "--relay", relay.url),
            *("--identities", str(ids), "--enrol", str(n), "--store", relay.store),
            *("--password-file", str(relay.data / "admin.pw"), "--enrol-only"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=3600,
    )
    if result.returncode != 0:
        raise RuntimeError(f"enrolment failed: {result.stderr[-2000:]}")
    return time.perf_counter() - start


def device_ids(ids: Path) -> list[str]:
    return [
        json.loads((d / "agent.json").read_text())["device_id"]
        for d in sorted(p for p in ids.iterdir() if p.is_dir())
    ]


# --- console side: round trips and fan-out ----------------------------------------------------


async def relay_rtt(url: str, tokens: Tokens, device: str, n: int) -> list[float]:
    """``n`` diagnostics round trips to ``device``, back-to-back, over real consoles."""
    from posassist.console.connection import ConsoleConnection
    from posassist.protocol import DiagnosticsReport, DiagnosticsRequest

    latencies: list[float] = []
    for _ in range(-(-n // PER_CONSOLE)):
        async with ConsoleConnection.open(url, tokens.take()) as console:
            for _i in range(min(PER_CONSOLE, n - len(latencies))):
                request = DiagnosticsRequest(
                    id=console.session.next_id(), device_id=device, timeout=10.0
                )
                start = time.perf_counter()
                replies = [r async for r in console.request(request, 15.0)]
                latencies.append(time.perf_counter() - start)
                if not isinstance(replies[-1], DiagnosticsReport):
                    raise RuntimeError(f"diag answered {replies[-1]!r}")
    return latencies


async def relay_fanout(url: str, tokens: Tokens, devices: Sequence[str]) -> float:
    """One diagnostics request to every device at once; seconds until the last reply."""
    from posassist.console.connection import ConsoleConnection
    from posassist.protocol import DiagnosticsReport, DiagnosticsRequest

    groups = [devices[i : i + PER_CONSOLE] for i in range(0, len(devices), PER_CONSOLE)]
    async with contextlib.AsyncExitStack() as stack:
        consoles = [
            await stack.enter_async_context(ConsoleConnection.open(url, tokens.take()))
            for _ in groups
        ]

        async def one(console: Any, device: str) -> None:
            request = DiagnosticsRequest(
                id=console.session.next_id(), device_id=device, timeout=10.0
            )
            replies = [r async for r in console.request(request, 15.0)]
            if not isinstance(replies[-1], DiagnosticsReport):
                raise RuntimeError(f"diag answered {replies[-1]!r}")

        start = time.perf_counter()
        await asyncio.gather(
            *(
                one(console, d)
                for console, group in zip(consoles, groups, strict=True)
                for d in group
            )
        )
        return time.perf_counter() - start


class BaselinePeers:
    """Bare websocket pairs on the forwarder: an 'agent' end answering each request frame with
    an encoded DiagnosticsReport like the fleet's, and a 'console' end."""

    def __init__(self, url: str) -> None:
        self.url = url

    async def __aenter__(self) -> BaselinePeers:
        from aiohttp import ClientSession, TCPConnector

        self.http = ClientSession(connector=TCPConnector(limit=0))
        self.tasks: list[asyncio.Task[None]] = []
        self.sockets: list[Any] = []
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for ws in self.sockets:
            await ws.close()
        await self.http.close()

    async def pair(self, key: str) -> Any:
        from posassist.protocol import Codec, DiagnosticsReport
        from posassist.relay.fleet import diagnostics_sections

        codec = Codec()
        agent = await self.http.ws_connect(f"{self.url}/pair/{key}", max_msg_size=1 << 20)
        console = await self.http.ws_connect(f"{self.url}/pair/{key}", max_msg_size=1 << 20)
        self.sockets += [agent, console]

        async def answer() -> None:
            async for msg in agent:
                request = codec.decode(msg.data)
                report = DiagnosticsReport(
                    id=getattr(request, "id"),  # noqa: B009
                    device_id=getattr(request, "device_id"),  # noqa: B009
                    collected_at=time.time(),
                    sections=diagnostics_sections(None, 0),  # type: ignore[arg-type]
                )
                await agent.send_bytes(codec.encode(report))

        self.tasks.append(asyncio.create_task(answer()))
        return console

    async def hold(self, n: int) -> None:
        """``n`` unpaired websockets held open (memory per connection)."""
        for i in range(n):
            self.sockets.append(await self.http.ws_connect(f"{self.url}/pair/idle-{i}"))


async def _one_request(console: Any, request_id: int) -> float:
    from posassist.protocol import Codec, DiagnosticsRequest

    codec = Codec()
    frame = codec.encode(DiagnosticsRequest(id=request_id, device_id="dev_bench", timeout=10.0))
    start = time.perf_counter()
    await console.send_bytes(frame)
    reply = codec.decode(await console.receive_bytes())
    if getattr(reply, "id", None) != request_id:
        raise RuntimeError(f"baseline answered {reply!r}")
    return time.perf_counter() - start


async def baseline_rtt(url: str, n: int) -> list[float]:
    async with BaselinePeers(url) as peers:
        console = await peers.pair("rtt")
        return [await _one_request(console, i + 1) for i in range(n)]


async def baseline_fanout(url: str, n: int, repeats: int) -> list[float]:
    async with BaselinePeers(url) as peers:
        consoles = [await peers.pair(f"fan-{n}-{i}") for i in range(n)]
        times = []
        for r in range(repeats):
            start = time.perf_counter()
            await asyncio.gather(*(_one_request(c, r + 1) for c in consoles))
            times.append(time.perf_counter() - start)
        return times


# --- the suite ------------------------------------------------------------------------------


@dataclass
class Results:
    date: str
    settings: dict[str, Any]
    calibration: list[float] = field(default_factory=list)
    relay_idle_mb: list[float] = field(default_factory=list)
    baseline_idle_mb: list[float] = field(default_factory=list)
    baseline_kb_per_socket: float = 0.0
    baseline_held: int = 0
    enrol_seconds: float = 0.0
    steps: list[dict[str, Any]] = field(default_factory=list)
    baseline_rtt: list[list[float]] = field(default_factory=list)
    fanout: dict[int, list[float]] = field(default_factory=dict)
    baseline_fanout: dict[int, list[float]] = field(default_factory=dict)
    storms: list[dict[str, Any]] = field(default_factory=list)
    alerts: dict[str, Any] = field(default_factory=dict)
    #: benchmarks/bench_abuse.py's figures, with --abuse
    abuse: dict[str, Any] = field(default_factory=dict)


def idle_footprints(work: Path, res: Results, repeats: int) -> None:
    for i in range(repeats):
        data = work / f"idle-{i}" / "relay"
        store = provision(data)
        relay = launch_relay(data, store)
        try:
            res.relay_idle_mb.append(settle(relay.pid))
        finally:
            relay.stop()
        baseline = start_baseline(work)
        try:
            res.baseline_idle_mb.append(settle(baseline.proc.pid))
        finally:
            baseline.stop()


def baseline_figures(work: Path, res: Results, rtt_n: int, batches: int, hold: int) -> None:
    baseline = start_baseline(work)
    try:
        for _ in range(batches):
            res.baseline_rtt.append(asyncio.run(baseline_rtt(baseline.url, rtt_n)))
        for n in (20, 200):
            res.baseline_fanout[n] = asyncio.run(baseline_fanout(baseline.url, n, 7))
        before = settle(baseline.proc.pid, 1.0)

        async def held() -> float:
            async with BaselinePeers(baseline.url) as peers:
                await peers.hold(hold)
                await asyncio.sleep(2.0)
                return rss_mb(baseline.proc.pid)

        after = asyncio.run(held())
        res.baseline_held = hold
        res.baseline_kb_per_socket = (after - before) * 1024 / max(1, hold)
    finally:
        baseline.stop()


def alert_ingest(relay: Relay, ids: Path, agents: int, seconds: float) -> dict[str, Any]:
    """``agents`` tills each raising one alert a minute for ``seconds``: send-to-ack latency."""
    fleet = Fleet(relay, ids, 0, agents, seconds, alert_rate=1.0)
    fleet.wait_all_connected(0, 600)
    cpu_start, start = cpu_seconds(relay.pid), time.perf_counter()
    fleet.proc.wait(timeout=seconds + 300)  # it ends by itself after ``seconds``
    cpu = cpu_seconds(relay.pid) - cpu_start
    wall = time.perf_counter() - start
    fleet.stop()
    latencies = fleet.alert_ms()
    return {
        "agents": agents,
        "seconds": seconds,
        "acked": len(latencies),
        "ms": latencies,
        "relay_cpu_share": round(cpu / wall, 3) if wall > 0 else 0.0,
    }


def alerts_only(raw: Path, agents: int, seconds: float) -> int:
    """Measure only the alert-ingest section and add it to an earlier run's JSON and tables."""
    data = json.loads(raw.read_text())
    work = Path(tempfile.mkdtemp(prefix="posassist-bench-"))
    relay_data = work / "fleet" / "relay"
    relay = launch_relay(relay_data, provision(relay_data))
    try:
        ids = work / "fleet" / "ids"
        enrol(relay, ids, agents)
        data["alerts"] = alert_ingest(relay, ids, agents, seconds)
    finally:
        relay.stop()
    raw.write_text(json.dumps(data, default=str, indent=1))
    return render(raw, raw.parent)


def storm(relay: Relay, fleets: Sequence[Fleet], agents: int) -> tuple[Relay, dict[str, Any]]:
    """Restart the relay under ``fleets``; time until every agent is authenticated again."""
    marks = [f.mark() for f in fleets]
    before = _errors(fleets)
    relay.stop()
    stopped = time.time()
    new = launch_relay(relay.data, relay.store, relay.port)
    listening = time.time()
    cpu_start = cpu_seconds(new.pid)
    ends = [f.wait_all_connected(m, 600) for f, m in zip(fleets, marks, strict=True)]
    all_in = max(float(e["all_in_at"]) for e in ends)
    cpu = cpu_seconds(new.pid) - cpu_start
    time.sleep(1.0)  # one more status line from each process, for the errors
    after = _errors(fleets)
    # the curve: total connected over time, rebuilt from every process's status lines
    points: list[tuple[float, int]] = []
    state: dict[tuple[int, Any], int] = {}
    events = sorted(
        (float(e["at"]), (i, e["process"]), int(e["connected"]))
        for i, (f, m) in enumerate(zip(fleets, marks, strict=True))
        for e in f.status_since(m)
    )
    for at, key, connected in events:
        state[key] = connected
        points.append((at - listening, sum(state.values())))
    points.append((all_in - listening, agents))
    return new, {
        "agents": agents,
        "down_seconds": round(listening - stopped, 3),
        "seconds": round(all_in - listening, 3),
        "relay_cpu": round(cpu, 3),
        "handshakes_per_core_second": round(agents / cpu, 1) if cpu > 0 else 0.0,
        "curve": points,
        "errors": {k: n - before.get(k, 0) for k, n in after.items() if n > before.get(k, 0)},
    }


def _errors(fleets: Sequence[Fleet]) -> dict[str, int]:
    total: dict[str, int] = {}
    for f in fleets:
        for kind, n in f.errors_now().items():
            total[kind] = total.get(kind, 0) + n
    return total


def run(args: argparse.Namespace) -> Results:
    res = Results(date=datetime.date.today().isoformat(), settings=vars(args).copy())
    res.calibration.append(calibrate())
    print(f"calibration: {res.calibration[0] * 1000:.0f} ms", flush=True)
    work = Path(tempfile.mkdtemp(prefix="posassist-bench-"))
    idle_footprints(work, res, args.repeats)
    print(f"idle: relay {fmt(res.relay_idle_mb, ' MB')}", flush=True)
    baseline_figures(work, res, args.rtt, args.repeats, args.baseline_hold)
    data = work / "fleet" / "relay"
    store = provision(data)
    tokens = Tokens(asyncio.run(make_tokens(data, store, 32)))
    relay = launch_relay(data, store)
    ids = work / "fleet" / "ids"
    fleets: list[Fleet] = []
    try:
        res.enrol_seconds = enrol(relay, ids, args.max_agents)
        print(f"enrolled {args.max_agents} in {res.enrol_seconds:.1f} s", flush=True)
        devices = device_ids(ids)
        res.alerts = alert_ingest(relay, ids, min(1000, args.max_agents), args.alert_seconds)
        print(f"alerts: {res.alerts['acked']} acknowledged", flush=True)
        connected = 0
        rss0 = 0.0  # per agent: relay RSS minus its own with no agent (the first step, 0)
        for step in args.steps:
            if step > connected:
                started = time.perf_counter()
                fleets.append(Fleet(relay, ids, connected, step - connected, args.fleet_duration))
                fleets[-1].wait_all_connected(0, 900)
                connect_seconds = time.perf_counter() - started
                connected = step
            else:
                connect_seconds = 0.0
            rss = settle(relay.pid, 3.0)
            if step == 0:
                rss0 = rss
            batches = [
                asyncio.run(relay_rtt(relay.url, tokens, devices[0], args.rtt))
                for _ in range((args.repeats if step < args.max_agents else 1) if step else 0)
            ]
            res.steps.append(
                {
                    "agents": step,
                    "rss_mb": rss,
                    "kb_per_agent": (rss - rss0) * 1024 / step if step else 0.0,
                    "connect_seconds": connect_seconds,
                    "rtt": batches,
                }
            )
            print(f"{step} agents: relay {rss:.1f} MB", flush=True)
            if step >= 200 and not res.fanout:
                for n in (20, 200):
                    res.fanout[n] = []
                    for _ in range(7):
                        time.sleep(0.5)  # the technicians' request buckets refill (20/s)
                        res.fanout[n].append(
                            asyncio.run(relay_fanout(relay.url, tokens, devices[:n]))
                        )
        # reconnect storms: once with the big fleet, then repeated with a small one (the fleets
        # of the later steps stopped, the first ones kept connected)
        for size, repeats in ((args.storm_big, 1), (args.storm_small, args.repeats)):
            while fleets and sum(f.count for f in fleets) > size:
                fleets.pop().stop()
            connected = sum(f.count for f in fleets)
            for _ in range(repeats):
                relay, result = storm(relay, fleets, connected)
                res.storms.append(result)
                print(f"storm {connected}: {result['seconds']} s", flush=True)
    finally:
        for f in fleets:
            f.stop()
        relay.stop()
    if args.abuse:
        from benchmarks.bench_abuse import run_scenarios

        res.abuse = run_scenarios(work / "abuse", quick=args.quick)
    res.calibration.append(calibrate())
    return res


# --- writing ----------------------------------------------------------------------------------


def plots(res: Results, out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = []
    steps = [s for s in res.steps if s["rtt"]]
    fig, (mem, lat) = plt.subplots(1, 2, figsize=(11, 4))
    agents = [s["agents"] for s in res.steps]
    mem.plot(agents, [s["rss_mb"] for s in res.steps], "o-", label="relay RSS")
    base_idle = statistics.median(res.baseline_idle_mb)
    mem.plot(
        agents,
        [base_idle + a * res.baseline_kb_per_socket / 1024 for a in agents],
        "--",
        label="bare aiohttp forwarder (extrapolated per socket)",
    )
    mem.set_xlabel("connected agents")
    mem.set_ylabel("MB")
    mem.set_title("relay memory vs connected agents")
    mem.legend()
    for q, style in ((0.5, "o-"), (0.9, "s-"), (0.99, "^-")):
        lat.plot(
            [s["agents"] for s in steps],
            [statistics.median(percentile(b, q) for b in s["rtt"]) * 1000 for s in steps],
            style,
            label=f"relay p{round(q * 100)}",
        )
    base = [x for b in res.baseline_rtt for x in b]
    if base:
        lat.axhline(percentile(base, 0.5) * 1000, color="grey", ls="--", label="forwarder p50")
    lat.set_xlabel("connected agents")
    lat.set_ylabel("ms")
    lat.set_title("diagnostics round trip (console → agent → console)")
    lat.legend()
    fig.tight_layout()
    name = f"{res.date}-memory-latency.png"
    fig.savefig(out / name, dpi=100)
    names.append(name)
    plt.close(fig)
    if res.storms:
        fig, ax = plt.subplots(figsize=(6, 4))
        for s in res.storms:
            xs, ys = zip(*s["curve"], strict=True) if s["curve"] else ((), ())
            ax.step(xs, ys, where="post", label=f"{s['agents']} agents")
        ax.set_xlabel("seconds since the relay listens again")
        ax.set_ylabel("agents authenticated")
        ax.set_title("reconnect storm")
        ax.legend()
        fig.tight_layout()
        name = f"{res.date}-reconnect-storm.png"
        fig.savefig(out / name, dpi=100)
        names.append(name)
        plt.close(fig)
    return names


def markdown(res: Results, images: Sequence[str]) -> str:
    cal = res.calibration
    lines = [
        f"# Capacity suite, {res.date}",
        "",
        "`make bench` (benchmarks/suite.py): a real `posassist-relay serve` on SQLite, "
        "`posassist-fleet` stores on the real protocol, all on this machine "
        f"({os.cpu_count()} cores): idle footprint, idle authenticated agents, round trips, "
        "fan-out to 20 and 200 agents, reconnect storm. Figures are median (min–max) of "
        "repeated runs unless one run is shown. Settings: "
        + ", ".join(f"{k}={v}" for k, v in res.settings.items() if k != "out"),
        "",
        "## Calibration (a fixed CPU loop)",
        "",
        "| when | seconds |",
        "|---|---|",
        f"| start | {cal[0]:.3f} |",
        f"| end | {cal[-1]:.3f} |",
        f"| end / start | {cal[-1] / cal[0]:.2f} |",
        "",
        "## Idle footprint (no agents)",
        "",
        "| process | RSS MB | target |",
        "|---|---|---|",
        f"| relay, idle, SQLite | {fmt(res.relay_idle_mb)} | ≤ 70 |",
        f"| bare aiohttp forwarder, idle | {fmt(res.baseline_idle_mb)} | — |",
        "",
        "## Idle authenticated agents and round trips",
        "",
        f"Enrolment of {res.steps[-1]['agents'] if res.steps else 0} tills through real one-time "
        f"tokens: {res.enrol_seconds:.1f} s. KB per agent: relay RSS minus the same relay's with "
        "no agent connected (the first row). Round trip: a diagnostics request from a console to "
        "one agent and its report back, back-to-back; p50/p99 of each batch, median over "
        f"batches. Forwarder baseline: held websockets cost {res.baseline_kb_per_socket:.1f} KB "
        f"each ({res.baseline_held} held).",
        "",
        "| connected agents | relay RSS MB | KB per agent | connect s | rtt p50 ms | rtt p99 ms"
        " | p50 vs forwarder |",
        "|---|---|---|---|---|---|---|",
    ]
    base = [percentile(b, 0.5) for b in res.baseline_rtt]
    base99 = [percentile(b, 0.99) for b in res.baseline_rtt]
    for s in res.steps:
        p50 = [percentile(b, 0.5) * 1000 for b in s["rtt"]]
        p99 = [percentile(b, 0.99) * 1000 for b in s["rtt"]]
        ratio = f"{statistics.median(p50) / (statistics.median(base) * 1000):.1f}×" if p50 else "—"
        lines.append(
            f"| {s['agents']} | {s['rss_mb']:.1f} | {s['kb_per_agent']:.1f} | "
            f"{s['connect_seconds']:.1f} | {fmt(p50, digits=2)} | {fmt(p99, digits=2)} | {ratio} |"
        )
    lines += [
        f"| forwarder | — | {res.baseline_kb_per_socket:.1f} | — | "
        f"{fmt([b * 1000 for b in base], digits=2)} | {fmt([b * 1000 for b in base99], digits=2)}"
        " | 1× |",
        "",
        "## Fan-out: one diagnostics request to N agents, until every reply is in",
        "",
        "| agents | relay ms | forwarder ms | relay / forwarder | target |",
        "|---|---|---|---|---|",
    ]
    for n in (20, 200):
        relay_ms = [x * 1000 for x in res.fanout.get(n, [])]
        base_ms = [x * 1000 for x in res.baseline_fanout.get(n, [])]
        ratio = (
            f"{statistics.median(relay_ms) / statistics.median(base_ms):.1f}×"
            if relay_ms and base_ms
            else "—"
        )
        target = "≤ 10 ms" if n == 20 else "—"
        lines.append(
            f"| {n} | {fmt(relay_ms, digits=1)} | {fmt(base_ms, digits=1)} | {ratio} | {target} |"
        )
    lines += [
        "",
        "## Reconnect storm: the relay restarted with every agent connected",
        "",
        "| agents | relay down s | until all authenticated s | relay CPU s | handshakes per "
        "core-second | agents' errors (retried) |",
        "|---|---|---|---|---|---|",
    ]
    for s in res.storms:
        errors = ", ".join(f"{k} {v}" for k, v in sorted(s.get("errors", {}).items())) or "none"
        lines.append(
            f"| {s['agents']} | {s['down_seconds']:.1f} | {s['seconds']:.2f} | "
            f"{s['relay_cpu']:.2f} | {s['handshakes_per_core_second']:.0f} | {errors} |"
        )
    if res.alerts:
        a = res.alerts
        ms = a["ms"]
        lines += [
            "",
            "## Alert ingest: each agent raises one alert a minute",
            "",
            f"{a['agents']} agents for {a['seconds']:.0f} s; latency from `alert.raised` sent to "
            "its `alert.ack` received (the relay stores the event, opens or resolves the alert).",
            "",
            "| agents | alerts acknowledged | p50 ms | p90 ms | p99 ms | max ms "
            "| relay CPU share |",
            "|---|---|---|---|---|---|---|",
        ]
        if ms:
            lines.append(
                f"| {a['agents']} | {a['acked']} | {percentile(ms, 0.5):.1f} | "
                f"{percentile(ms, 0.9):.1f} | {percentile(ms, 0.99):.1f} | {max(ms):.1f} | "
                f"{a['relay_cpu_share']:.0%} |"
            )
    if res.abuse:
        from benchmarks.bench_abuse import markdown as abuse_markdown

        lines += ["", "## Bad behaviour (benchmarks/bench_abuse.py)", "", abuse_markdown(res.abuse)]
    lines += ["", "## Plots", ""]
    lines += [f"![{name}]({name})" for name in images]
    return "\n".join(lines) + "\n"


def render(raw: Path, out: Path) -> int:
    """Tables and plots again from a run's JSON (``<date>.json``), without measuring."""
    data = json.loads(raw.read_text())
    for key in ("fanout", "baseline_fanout"):
        data[key] = {int(n): v for n, v in data[key].items()}
    res = Results(**data)
    out.mkdir(parents=True, exist_ok=True)
    text = markdown(res, plots(res, out))
    (out / f"{res.date}.md").write_text(text)
    print(text)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--quick", action="store_true", help="small counts, one repeat: a smoke run")
    p.add_argument("--max-agents", type=int, default=19_000)
    p.add_argument("--steps", default="", help="comma-separated agent counts (default: derived)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--storm-agents", type=int, default=10_000, help="agents in the big storm")
    p.add_argument("--rtt", type=int, default=200, help="round trips per batch")
    p.add_argument("--baseline-hold", type=int, default=2000)
    p.add_argument("--fleet-duration", type=float, default=3600.0)
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--alert-seconds", type=float, default=120.0, help="alert-ingest run length")
    p.add_argument("--render", type=Path, help="only write the tables and plots of this JSON")
    p.add_argument(
        "--abuse", action="store_true", help="also the bad-behaviour scenarios (bench_abuse)"
    )
    p.add_argument(
        "--alerts-only", type=Path, help="only measure alert ingest, added to this run's JSON"
    )
    args = p.parse_args(argv)
    if args.render is not None:
        return render(args.render, args.out)
    if args.alerts_only is not None:
        return alerts_only(args.alerts_only, 1000, args.alert_seconds)
    if args.quick:
        args.max_agents, args.repeats, args.rtt, args.baseline_hold = 300, 2, 50, 200
        args.alert_seconds = 20.0
    if not 200 <= args.max_agents <= 19_000:
        p.error("--max-agents must be 200..19000 (the fd limit)")
    steps = [int(x) for x in args.steps.split(",") if x] or sorted(
        {0, 200, min(1000, args.max_agents), min(args.storm_agents, args.max_agents)}
        | {args.max_agents // 2, args.max_agents}
    )
    args.steps = steps
    args.storm_big = max(s for s in steps if s <= args.storm_agents)
    args.storm_small = min(s for s in steps if s > 0)
    res = run(args)
    args.out.mkdir(parents=True, exist_ok=True)
    images = plots(res, args.out)
    text = markdown(res, images)
    (args.out / f"{res.date}.md").write_text(text)
    raw = {k: v for k, v in vars(res).items()}
    (args.out / f"{res.date}.json").write_text(json.dumps(raw, default=str, indent=1))
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
