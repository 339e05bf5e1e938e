"""What the benchmarks share: a real relay process and posassist-fleet tills to run against,
technicians' tokens, consoles' round trips and fan-outs, the bare forwarder's baseline, and the
measuring helpers (CPU calibration, percentiles, RSS and CPU seconds of a process).

Every wait has a deadline; everything runs on 127.0.0.1. Used by benchmarks/suite.py (``make
bench``) and the single-purpose ``bench_*.py``; not a benchmark itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil  # type: ignore[import-untyped]

from tests.e2e.cli import start_relay

if TYPE_CHECKING:
    from collections.abc import Sequence

ROOT = Path(__file__).resolve().parents[1]
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


def launch_relay(
    data: Path,
    store: str,
    port: int = 0,
    options: Sequence[str] = (),
    runner: Sequence[str] = (),
) -> Relay:
    """``posassist-relay serve`` (SQLite, ``port`` or a free one), its output in relay.log beside
    ``data``; ``runner`` in place of ``python -m`` runs it under a profiler."""
    log = (data.parent / "relay.log").open("a")
    extra = ["--port", str(port)] if port else []
    proc, url = start_relay(data, *extra, *options, log=log, runner=runner)
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


def enrol(relay: Relay, ids: Path, n: int, store: str = "") -> float:
    """Enrol ``n`` tills of ``store`` (the relay's first store if not given) in ``ids`` through
    real one-time tokens (the fleet's own enrolment, the agent's identity format); seconds."""
    start = time.perf_counter()
    result = subprocess.run(
        [
            *(sys.executable, "-m", "posassist.relay.fleet", "--relay", relay.url),
            *("--identities", str(ids), "--enrol", str(n), "--store", store or relay.store),
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


def till_folders(ids: Path) -> list[Path]:
    """The tills' folders in ``ids``, in order."""
    return sorted(p for p in ids.iterdir() if p.is_dir())


def device_ids(ids: Path) -> list[str]:
    return [json.loads((d / "agent.json").read_text())["device_id"] for d in till_folders(ids)]


# --- console side: round trips and fan-out ----------------------------------------------------


async def relay_rtt(
    url: str, tokens: Tokens, device: str, n: int, pace: float = 0.0, collectors: Sequence[str] = ()
) -> list[float]:
    """``n`` diagnostics round trips to ``device`` over real consoles, one every ``pace`` seconds
    (0: back-to-back), asking for ``collectors`` (none: all); :data:`PER_CONSOLE` a technician."""
    from posassist.console.connection import ConsoleConnection
    from posassist.protocol import DiagnosticsReport, DiagnosticsRequest

    latencies: list[float] = []
    while len(latencies) < n:
        async with ConsoleConnection.open(url, tokens.take()) as console:
            for _ in range(min(PER_CONSOLE, n - len(latencies))):
                request = DiagnosticsRequest(
                    id=console.session.next_id(),
                    device_id=device,
                    collectors=tuple(collectors),
                    timeout=10.0,
                )
                start = time.perf_counter()
                replies = [r async for r in console.request(request, 15.0)]
                latencies.append(time.perf_counter() - start)
                if not isinstance(replies[-1], DiagnosticsReport):
                    raise RuntimeError(f"diag answered {replies[-1]!r}")
                if pace:
                    await asyncio.sleep(pace)  # the pacing is the measurement's, not a wait
    return latencies


async def relay_fanout(
    url: str,
    tokens: Tokens,
    devices: Sequence[str],
    collectors: Sequence[str] = (),
    wait: float = 15.0,
    every_answer: bool = True,
) -> tuple[float, int]:
    """One diagnostics request (``collectors``; none: all) to every device at once over
    consoles, :data:`PER_CONSOLE` devices a technician; seconds until the last reply (each
    waited for up to ``wait``) and how many were reports. ``every_answer``: any other answer
    raises."""
    from posassist.console.connection import ConsoleConnection
    from posassist.protocol import DiagnosticsReport, DiagnosticsRequest

    groups = [devices[i : i + PER_CONSOLE] for i in range(0, len(devices), PER_CONSOLE)]
    answered = 0
    async with contextlib.AsyncExitStack() as stack:
        consoles = [
            await stack.enter_async_context(ConsoleConnection.open(url, tokens.take()))
            for _ in groups
        ]

        async def one(console: Any, device: str) -> None:
            nonlocal answered
            request = DiagnosticsRequest(
                id=console.session.next_id(),
                device_id=device,
                collectors=tuple(collectors),
                timeout=10.0,
            )
            replies = [r async for r in console.request(request, wait)]
            if isinstance(replies[-1], DiagnosticsReport):
                answered += 1
            elif every_answer:
                raise RuntimeError(f"diag answered {replies[-1]!r}")

        start = time.perf_counter()
        await asyncio.gather(
            *(one(c, d) for c, group in zip(consoles, groups, strict=True) for d in group)
        )
        return time.perf_counter() - start, answered


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


async def baseline_request(console: Any, request_id: int) -> float:
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
        return [await baseline_request(console, i + 1) for i in range(n)]


async def baseline_fanout(url: str, n: int, repeats: int) -> list[float]:
    async with BaselinePeers(url) as peers:
        consoles = [await peers.pair(f"fan-{n}-{i}") for i in range(n)]
        times = []
        for r in range(repeats):
            start = time.perf_counter()
            await asyncio.gather(*(baseline_request(c, r + 1) for c in consoles))
            times.append(time.perf_counter() - start)
        return times


def fleet_errors(fleets: Sequence[Fleet]) -> dict[str, int]:
    """The agents' errors by kind over every fleet, as each process last reported them."""
    total: dict[str, int] = {}
    for f in fleets:
        for kind, n in f.errors_now().items():
            total[kind] = total.get(kind, 0) + n
    return total


class PeakRss:
    """The highest RSS of ``pid`` seen every 0.05 s until :meth:`stop` (MB)."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak = pid, 0.0
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()

    def _watch(self) -> None:
        while not self.done.is_set():
            try:
                self.peak = max(self.peak, rss_mb(self.pid))
            except psutil.Error:  # the process ended
                return
            self.done.wait(0.05)

    def stop(self) -> float:
        self.done.set()
        self.thread.join(timeout=5)
        return self.peak
