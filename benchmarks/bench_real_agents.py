"""Real ``posassist-agent`` processes behind a real relay: round trips, a script's parts, fan-out.

Run from the repository root: ``python -m benchmarks.bench_real_agents [--agents N] [--quick]``.
Prints a markdown table and writes ``benchmarks/results/<date>-real-agents.md``. Not a test: no
assertion on timing; compare ratios within one run, this machine is shared.

What runs, all on 127.0.0.1:

- a real ``posassist-relay serve`` on SQLite (tests/e2e/cli.py ``provision``, ``start_relay``),
  with an approvers' script repository published as the e2e tests do (one risk-A, unattended
  script that echoes a line);
- N real ``posassist-agent run`` processes (``--no-checks`` unless ``--checks``: health checks on
  200 tills would load this 2-core machine between requests), enrolled through real one-time
  tokens (the first with ``posassist-agent enroll`` and the approvers' root hash, so it can run
  the script; the rest through ``posassist-fleet --enrol-only``, which writes the agent's own
  identity format); every process is stopped at the end;
- consoles on the real websocket API (console/connection.py), technicians with bearer tokens.

Sections:

a. diagnostics round trip to one agent, the ``printers`` collector with nothing configured (the
   agent has nothing to probe): paced (one every 250 ms) and back-to-back; p50/p99;
b. the vetted script, paced: when each part of the run reached the console (verification,
   spawn, first output, finished), from the agent's messages' arrival times;
c. fan-out: one diagnostics request to 20 and to 200 agents until every reply is in, median
   (min-max), over per-device websocket requests and over ``POST /v1/stores/{id}/diag`` (one HTTP
   request, when the relay has it), next to the bare forwarder (benchmarks/bench_relay.py)
   measured in the same run.

Each phase also records the CPU seconds the relay and the agents spent in it (psutil), per
request: steadier than wall-clock figures on a shared machine. ``--profile DIR`` runs the relay
and the first agent under cProfile (benchmarks/profiled.py), switched on for each phase only,
and writes ``DIR/{relay,agent}-<phase>.prof``.
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
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks.bench_relay import start_baseline
from benchmarks.harness import (
    PASSWORD,
    ROOT,
    BaselinePeers,
    Relay,
    Tokens,
    baseline_fanout,
    baseline_request,
    baseline_rtt,
    calibrate,
    enrol,
    fmt,
    launch_relay,
    percentile,
    relay_fanout,
    relay_rtt,
    rss_mb,
    till_folders,
)
from tests.e2e.cli import invite, provision

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

RESULTS = ROOT / "benchmarks" / "results"
#: The script the approvers publish for section b.
SCRIPT = "bench-echo"
#: Agents started at once (each costs ~0.4 s of CPU to start).
START_CONCURRENCY = 6
#: The most agents this benchmark starts (memory: ~30 MB each).
MAX_AGENTS = 200
COLLECTORS = ("printers",)


# --- the relay, the repository and the agents ------------------------------------------------


def publish_repository(work: Path, data: Path) -> str:
    """The approvers' repository with one trivial risk-A script, published into the relay's data
    directory (tests/e2e/test_vetted_scripts.py does the same); its root hash."""
    from posassist.console.scripts_repo import init_repository
    from tests.agent.test_verify import PASS, add, approve, manifest

    repo = init_repository(work / "approvers", ["alice", "bob"], PASS)
    raw = manifest(SCRIPT)
    raw.update({"risk": "A", "unattended": True, "consent": False})
    add(repo, work, raw, body=b"echo hello from the till\n")
    approve(repo, "alice", "bob")
    repo.publish(data)
    return repo.root_hash()


def enrol_script_till(relay: Relay, till: Path, root_hash: str) -> None:
    """``posassist-agent enroll`` with a fresh token and the approvers' root hash."""
    token = invite(relay.data, relay.store, relay.url)
    done = subprocess.run(
        [
            *(sys.executable, "-m", "posassist.agent", "enroll", token),
            *("--data", str(till), "--root-hash", root_hash),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if done.returncode != 0:
        raise RuntimeError(f"enroll failed: {done.stderr}")


async def prepare(data: Path, store: str, technicians: int) -> tuple[str, list[str]]:
    """A second store of the same merchant (so the first can hold exactly 20 tills and the
    store-wide route has a 20-device store) and technicians scoped to the merchant, each with a
    bearer token; before the relay starts."""
    from posassist.relay.config import RelayConfig
    from posassist.relay.passwords import hash_password
    from posassist.relay.storage import Role, Scope, ScopeKind, open_storage

    storage = open_storage(RelayConfig.load(data).database)
    try:
        await storage.migrate()
        now = time.time()
        merchant = (await storage.get_store(store)).merchant_id
        second = await storage.create_store(merchant, "Bench Rest", now=now)
        hashed, tokens = hash_password(PASSWORD), []
        for i in range(technicians):
            scope = Scope(ScopeKind.MERCHANT, merchant)
            user = await storage.create_user(f"bench{i}", hashed, Role.TECHNICIAN, scope, now=now)
            tokens.append(await storage.issue_token(user.id, now=now, ttl=24 * 3600))
    finally:
        await storage.close()
    return second.id, tokens


def profiled(prefix: Path) -> list[str]:
    """The command line that runs ``python -m MODULE ...`` under benchmarks/profiled.py."""
    return [sys.executable, "-m", "benchmarks.profiled", str(prefix)]


def thread_times(pid: int) -> dict[int, tuple[int, int]]:
    """Each thread of ``pid``: nanoseconds on a CPU, and nanoseconds it waited, runnable, for
    one (Linux schedstat); empty where there is no such file."""
    times = {}
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError, ValueError, IndexError):  # a thread just ended
                fields = (task / "schedstat").read_text().split()
                times[int(task.name)] = (int(fields[0]), int(fields[1]))
    return times


def spent(before: dict[int, tuple[int, int]], after: dict[int, tuple[int, int]]) -> list[float]:
    """CPU seconds and waiting seconds between two :func:`thread_times`: threads started in
    between count whole, their waiting not at all (it is not reset at their start); threads
    ended in between are lost (an idle worker's last moments)."""
    ran = waited = 0
    for tid, (run, wait) in after.items():
        run0, wait0 = before.get(tid, (0, wait))
        ran, waited = ran + run - run0, waited + wait - wait0
    return [ran / 1e9, waited / 1e9]


@dataclass
class Phases:
    """CPU seconds of the relay and of all agents per phase, and (with ``--profile``) one
    cProfile window per phase in the profiled processes."""

    relay_pid: int
    agent_pids: list[int]
    profiled: dict[str, int] = field(default_factory=dict)  # name → pid of profiled processes
    folder: Path | None = None
    cpu: dict[str, dict[str, float]] = field(default_factory=dict)
    windows: int = 0

    def _times(self) -> list[dict[int, tuple[int, int]]]:
        # the relay, the agents, and this process (the consoles, the HTTP client) last
        pids = (self.relay_pid, *self.agent_pids, os.getpid())
        return [thread_times(pid) for pid in pids]

    @contextlib.contextmanager
    def measure(self, name: str, requests: int) -> Iterator[None]:
        for pid in self.profiled.values():
            os.kill(pid, signal.SIGUSR1)
        before = self._times()
        wall0 = time.perf_counter()
        yield
        wall = time.perf_counter() - wall0
        after = self._times()
        relay = spent(before[0], after[0])
        agents = [spent(b, a) for b, a in zip(before[1:-1], after[1:-1], strict=True)]
        consoles = spent(before[-1], after[-1])
        for pid in self.profiled.values():
            os.kill(pid, signal.SIGUSR2)
        self.cpu[name] = {
            "requests": requests,
            "wall_s": wall,
            "relay_s": relay[0],
            "agents_s": sum(a[0] for a in agents),
            "relay_wait_s": relay[1],
            "agents_wait_s": sum(a[1] for a in agents),
            "consoles_s": consoles[0],
        }
        if self.folder is not None:
            self.windows += 1
            for who in self.profiled:
                _collect_profile(self.folder, who, self.windows, name)


@contextlib.contextmanager
def console_profile(folder: Path | None) -> Iterator[None]:
    """With ``folder``, this process (the consoles) under cProfile, thread CPU time, written
    to ``folder/console-rtt back-to-back.prof``."""
    if folder is None:
        yield
        return
    import cProfile

    profiler = cProfile.Profile(time.thread_time)
    profiler.enable()
    try:
        yield
    finally:
        profiler.disable()
        profiler.dump_stats(folder / "console-rtt back-to-back.prof")


def _collect_profile(folder: Path, who: str, window: int, phase: str) -> None:
    """Name the profile the process writes for ``window`` after its phase (waits for it)."""
    written = folder / f"{who}-{window}.prof"
    deadline = time.monotonic() + 30
    while not written.exists():
        if time.monotonic() > deadline:
            print(f"no profile from {who} for {phase}", file=sys.stderr)
            return
        time.sleep(0.05)  # the process writes it at its next wake-up
    time.sleep(0.2)  # written in one go, but let it finish
    written.replace(folder / f"{who}-{phase}.prof")


@dataclass
class Agents:
    """Running ``posassist-agent run`` processes, each with its stdout/stderr in a log file."""

    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(
        self,
        tills: Sequence[Path],
        logs: Path,
        checks: bool,
        timeout: float,
        profile_first: Path | None = None,
    ) -> float:
        """Start one agent per till, :data:`START_CONCURRENCY` at a time, each waited for until
        it says it is connected; seconds taken. With ``profile_first`` (a file prefix) the first
        runs under benchmarks/profiled.py."""
        logs.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        deadline = time.monotonic() + timeout
        pending = list(tills)
        starting: list[tuple[subprocess.Popen[bytes], Path]] = []
        while pending or starting:
            while pending and len(starting) < START_CONCURRENCY:
                till = pending.pop(0)
                log = logs / f"{till.name}.log"
                argv = [sys.executable, "-m", "posassist.agent", "run", "--data", str(till)]
                if profile_first is not None and not self.procs:
                    argv[:2] = profiled(profile_first)
                argv += [] if checks else ["--no-checks"]
                with log.open("wb") as out:
                    proc = subprocess.Popen(argv, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
                self.procs.append(proc)
                starting.append((proc, log))
            for proc, log in list(starting):
                if b"connected to relay" in log.read_bytes():
                    starting.remove((proc, log))
                elif proc.poll() is not None:
                    raise RuntimeError(f"agent exited: {log.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"agents not connected within {timeout} s")
            time.sleep(0.05)  # a benchmark polls the agents' logs (their first line)
        return time.perf_counter() - started

    def rss_mb(self) -> list[float]:
        return [rss_mb(p.pid) for p in self.procs if p.poll() is None]

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


# --- console side ------------------------------------------------------------------------------


async def script_parts(
    url: str, tokens: Tokens, device: str, n: int, pace: float
) -> list[dict[str, float]]:
    """``n`` runs of the vetted script; for each, ms from the request to each part's arrival."""
    from posassist.console.connection import ConsoleConnection
    from posassist.protocol import (
        ErrorReply,
        ScriptFinished,
        ScriptOutput,
        ScriptProgress,
        ScriptRunRequest,
        ScriptStarted,
    )

    runs: list[dict[str, float]] = []
    async with ConsoleConnection.open(url, tokens.take()) as console:
        for _ in range(n):
            request = ScriptRunRequest(
                id=console.session.next_id(),
                device_id=device,
                script=SCRIPT,
                version="1.0.0",
                params={},
                unattended=True,
            )
            start = time.perf_counter()
            parts: dict[str, float] = {}
            async for reply in console.request(request, 30.0):
                ms = (time.perf_counter() - start) * 1000
                if isinstance(reply, ScriptProgress):
                    parts.setdefault(reply.step, ms)
                elif isinstance(reply, ScriptStarted):
                    parts.setdefault("started", ms)
                elif isinstance(reply, ScriptOutput):
                    parts.setdefault("first output", ms)
                elif isinstance(reply, ScriptFinished):
                    if reply.status != "succeeded":
                        raise RuntimeError(f"script {reply.status}: {reply.detail}")
                    parts["finished"] = ms
                elif isinstance(reply, ErrorReply):
                    raise RuntimeError(f"script refused: {reply.code} {reply.message}")
            runs.append(parts)
            await asyncio.sleep(pace)
    return runs


async def store_fanout(
    url: str, tokens: Sequence[str], stores: Sequence[tuple[str, int]]
) -> float | None:
    """``POST /v1/stores/{id}/diag`` for each of ``stores`` (id, devices expected) at once, each
    by its own technician (a request costs one per device of the per-user rate, at most the
    burst); seconds until every answer is in (each with every device's result). None when the
    relay has no such route."""
    from aiohttp import ClientSession

    base = url.replace("ws://", "http://")
    body = {"collectors": list(COLLECTORS), "timeout": 10.0}

    async def one(http: ClientSession, token: str, store: str, expect: int) -> bool:
        headers = {"Authorization": f"Bearer {token}"}
        async with http.post(f"{base}/v1/stores/{store}/diag", json=body, headers=headers) as r:
            if r.status in (404, 405):
                return False
            answer = await r.json()
            if r.status != 200:
                raise RuntimeError(f"store diag answered {r.status}: {answer}")
        ok = sum(1 for d in answer["results"] if d.get("status") == "ok")
        if ok < expect:
            raise RuntimeError(f"store diag: {ok} of {expect} answered: {answer}")
        return True

    async with ClientSession() as http:
        start = time.perf_counter()
        found = await asyncio.gather(
            *(one(http, t, s, n) for t, (s, n) in zip(tokens, stores, strict=True))
        )
        seconds = time.perf_counter() - start
    return seconds if all(found) else None


async def baseline_paced(url: str, n: int, pace: float) -> list[float]:
    """The forwarder's round trip, one every ``pace`` seconds (both ends idle in between, as
    the relay and the agent are in the paced round trip)."""
    latencies = []
    async with BaselinePeers(url) as peers:
        console = await peers.pair("paced")
        for i in range(n):
            latencies.append(await baseline_request(console, i + 1))
            await asyncio.sleep(pace)  # the pacing is the measurement's, not a wait
    return latencies


# --- the run ---------------------------------------------------------------------------------


@dataclass
class Results:
    date: str
    settings: dict[str, Any]
    calibration: list[float] = field(default_factory=list)
    start_seconds: float = 0.0
    agent_rss_mb: list[float] = field(default_factory=list)
    rtt_paced: list[float] = field(default_factory=list)
    rtt_b2b: list[float] = field(default_factory=list)
    baseline_rtt: list[float] = field(default_factory=list)
    baseline_paced: list[float] = field(default_factory=list)
    script: list[dict[str, float]] = field(default_factory=list)
    fanout: dict[int, list[float]] = field(default_factory=dict)
    store_fanout: dict[int, list[float]] = field(default_factory=dict)
    baseline_fanout: dict[int, list[float]] = field(default_factory=dict)
    #: phase → requests, wall_s, relay_s, agents_s (CPU seconds of the relay, of all agents)
    cpu: dict[str, dict[str, float]] = field(default_factory=dict)


def run(args: argparse.Namespace) -> Results:
    res = Results(date=datetime.date.today().isoformat(), settings=vars(args).copy())
    res.calibration.append(calibrate())
    work = Path(tempfile.mkdtemp(prefix="posassist-real-agents-"))
    baseline = start_baseline(work)
    try:
        res.baseline_rtt = asyncio.run(baseline_rtt(baseline.url, args.rtt))
        res.baseline_paced = asyncio.run(baseline_paced(baseline.url, min(args.rtt, 100), 0.25))
        for n in args.fanout:
            res.baseline_fanout[n] = asyncio.run(baseline_fanout(baseline.url, n, args.repeats))
    finally:
        baseline.proc.terminate()
        baseline.proc.wait(timeout=30)
    print("baseline measured", flush=True)
    data = work / "relay"
    store = provision(data)
    root_hash = publish_repository(work, data)
    rest, technicians = asyncio.run(prepare(data, store, 16))
    tokens = Tokens(technicians)
    folder = args.profile
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        relay = launch_relay(data, store, runner=profiled(folder / "relay"))
    else:
        relay = launch_relay(data, store)
    agents = Agents()
    try:
        # the first store holds min(20, N) tills (the script till first), the second the rest
        first = min(20, args.agents)
        tills = [work / "script-till"]
        enrol_script_till(relay, tills[0], root_hash)
        if first > 1:
            enrol(relay, work / "ids-a", first - 1, store)
            tills += till_folders(work / "ids-a")
        if args.agents > first:
            enrol(relay, work / "ids-b", args.agents - first, rest)
            tills += till_folders(work / "ids-b")
        devices = [json.loads((t / "agent.json").read_text())["device_id"] for t in tills]
        res.start_seconds = agents.start(
            tills,
            work / "agent-logs",
            args.checks,
            900.0,
            profile_first=None if folder is None else folder / "agent",
        )
        res.agent_rss_mb = agents.rss_mb()
        print(f"{len(tills)} agents connected in {res.start_seconds:.1f} s", flush=True)
        phases = Phases(relay.pid, [p.pid for p in agents.procs], folder=folder)
        if folder is not None:
            phases.profiled = {"relay": relay.pid, "agent": agents.procs[0].pid}
        url = relay.url
        with phases.measure("idle, per second", 5):
            time.sleep(5)  # what the connected agents and the relay cost doing nothing
        with phases.measure("rtt paced", args.rtt):
            res.rtt_paced = asyncio.run(
                relay_rtt(url, tokens, devices[0], args.rtt, 0.25, COLLECTORS)
            )
        with phases.measure("rtt back-to-back", args.rtt), console_profile(folder):
            res.rtt_b2b = asyncio.run(relay_rtt(url, tokens, devices[0], args.rtt, 0.0, COLLECTORS))
        print(f"rtt p50 {percentile(res.rtt_b2b, 0.5) * 1000:.2f} ms", flush=True)
        if args.scripts:
            res.script = asyncio.run(script_parts(url, tokens, devices[0], args.scripts, 0.25))
        for n in args.fanout:
            if n > len(devices):
                continue
            res.fanout[n] = []
            with phases.measure(f"fan-out {n}, per-device requests", n * args.repeats):
                for _ in range(args.repeats):
                    time.sleep(0.5)  # the technicians' request buckets refill (20/s)
                    res.fanout[n].append(
                        asyncio.run(relay_fanout(url, tokens, devices[:n], COLLECTORS))[0]
                    )
            print(f"fan-out {n}: {fmt(_ms(res.fanout[n]), ' ms')}", flush=True)
            if args.store_route:
                stores = [(store, first)] if n <= first else [(store, first), (rest, n - first)]
                times = []
                with phases.measure(f"fan-out {n}, store route", n * args.repeats):
                    for _ in range(args.repeats):
                        time.sleep(0.5)  # as above
                        who = [tokens.take() for _ in stores]
                        times.append(asyncio.run(store_fanout(url, who, stores)))
                if None not in times:
                    res.store_fanout[n] = [t for t in times if t is not None]
                    print(f"store route {n}: {fmt(_ms(res.store_fanout[n]), ' ms')}", flush=True)
        res.cpu = phases.cpu
    finally:
        agents.stop()
        relay.stop()
    res.calibration.append(calibrate())
    return res


def _ratio(values: Sequence[float], base: Sequence[float]) -> str:
    if not values or not base:
        return "—"
    return f"{statistics.median(values) / statistics.median(base):.1f}×"


def _ms(values: Sequence[float]) -> list[float]:
    return [v * 1000 for v in values]


def markdown(res: Results) -> str:
    s = res.settings
    out = [
        f"# Real agents, {res.date}",
        "",
        "`python -m benchmarks.bench_real_agents` (benchmarks/bench_real_agents.py): a real "
        "`posassist-relay serve` on SQLite, real `posassist-agent run` processes "
        f"({'with' if s['checks'] else 'without'} health checks) enrolled through real "
        "one-time tokens, consoles on the real websocket API, all on this 2-core machine "
        "(shared). Figures: p50/p99 of all requests, or median (min–max) of repeats. "
        f"Settings: agents={s['agents']}, rtt={s['rtt']}, scripts={s['scripts']}, "
        f"repeats={s['repeats']}.",
        "",
        "| calibration (CPU loop) | start | end |",
        "|---|---|---|",
        f"| seconds | {res.calibration[0]:.3f} | {res.calibration[-1]:.3f} |",
        "",
        f"{len(res.agent_rss_mb)} agents started and connected in {res.start_seconds:.1f} s; "
        f"agent RSS {fmt(res.agent_rss_mb, ' MB')}.",
        "",
        "## Diagnostics round trip (console → relay → agent → relay → console)",
        "",
        f"`diag.request` for {', '.join(COLLECTORS)} (nothing configured).",
        "",
        "| mode | p50 ms | p90 ms | p99 ms | p50 vs forwarder |",
        "|---|---|---|---|---|",
    ]
    paced_base = res.baseline_paced or res.baseline_rtt
    for name, values, base in (
        ("paced, every 250 ms", res.rtt_paced, paced_base),
        ("back-to-back", res.rtt_b2b, res.baseline_rtt),
        ("forwarder, paced", res.baseline_paced, res.baseline_paced),
        ("forwarder, back-to-back", res.baseline_rtt, res.baseline_rtt),
    ):
        if not values:
            continue
        ms = _ms(values)
        p50 = percentile(ms, 0.5)
        base50 = percentile(_ms(base), 0.5) if base else 0.0
        ratio = f"{p50 / base50:.1f}×" if base50 else "—"
        out.append(
            f"| {name} | {p50:.2f} | {percentile(ms, 0.9):.2f} | {percentile(ms, 0.99):.2f} "
            f"| {ratio} |"
        )
    out += [
        "",
        "## A vetted script's parts (ms from the request, as the console received them)",
        "",
        f"`{SCRIPT}` 1.0.0 (risk A, unattended, `echo`), {len(res.script)} runs paced 250 ms.",
        "",
        "| part | p50 ms | min | max |",
        "|---|---|---|---|",
    ]
    names: list[str] = []
    for parts in res.script:
        names += [k for k in parts if k not in names]
    for name in sorted(names, key=lambda k: percentile([p[k] for p in res.script if k in p], 0.5)):
        values = [p[name] for p in res.script if name in p]
        out.append(
            f"| {name} | {percentile(values, 0.5):.1f} | {min(values):.1f} | {max(values):.1f} |"
        )
    out += [
        "",
        "## Fan-out: one diagnostics request to N agents, until every reply is in",
        "",
        "Per-device requests: one `diag.request` per device over consoles (40 devices per "
        "technician, the per-user limit); the first fan-out of a run (agents never asked "
        "before) is shown apart, the median (min–max) is of the others. Store route: "
        "`POST /v1/stores/{id}/diag` (one HTTP request per store; the 200 figure is two stores, "
        "20 + 180 devices, asked at once).",
        "",
        "| agents | first ms | per-device requests ms | store route ms | forwarder ms | "
        "requests / forwarder | route / forwarder | target |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for n in sorted(set(res.fanout) | set(res.store_fanout)):
        first = _ms(res.fanout.get(n, [])[:1])
        relay_ms = _ms(res.fanout.get(n, [])[1:])
        store_ms = _ms(res.store_fanout.get(n, []))
        base_ms = _ms(res.baseline_fanout.get(n, []))
        target = "≤ 10 ms" if n == 20 else "—"
        out.append(
            f"| {n} | {fmt(first)} | {fmt(relay_ms)} | {fmt(store_ms)} | {fmt(base_ms)} "
            f"| {_ratio(relay_ms, base_ms)} | {_ratio(store_ms, base_ms)} | {target} |"
        )
    if res.cpu:
        out += [
            "",
            "## CPU per request (Linux schedstat: CPU seconds of each process over the phase)",
            "",
            "Relay: the relay process. Agents: all agents together (a fan-out's request is one "
            "device's). Steadier than wall-clock figures on a shared machine. Waiting: time "
            "their threads were ready to run but had no CPU (Linux schedstat), per request. "
            "Consoles: this benchmark's own process (the consoles' websockets, the HTTP client).",
            "",
            "| phase | requests | relay CPU ms | agents CPU ms | relay waiting ms "
            "| agents waiting ms | consoles CPU ms | wall s |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for name, c in res.cpu.items():
            n = max(1, int(c["requests"]))
            out.append(
                f"| {name} | {n} | {c['relay_s'] * 1000 / n:.3f} | "
                f"{c['agents_s'] * 1000 / n:.3f} | {c.get('relay_wait_s', 0) * 1000 / n:.3f} | "
                f"{c.get('agents_wait_s', 0) * 1000 / n:.3f} | "
                f"{c.get('consoles_s', 0) * 1000 / n:.3f} | {c['wall_s']:.1f} |"
            )
    return "\n".join(out) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=200, help=f"1..{MAX_AGENTS}")
    parser.add_argument("--rtt", type=int, default=200, help="round trips per mode")
    parser.add_argument("--scripts", type=int, default=20, help="script runs (0: none)")
    parser.add_argument("--repeats", type=int, default=7, help="fan-outs per size")
    parser.add_argument("--fanout", type=int, nargs="+", default=[20, 200])
    parser.add_argument("--checks", action="store_true", help="agents run their health checks")
    parser.add_argument(
        "--no-store-route", dest="store_route", action="store_false", help="skip the route"
    )
    parser.add_argument("--quick", action="store_true", help="20 agents, fewer samples")
    parser.add_argument("--output", type=Path, help="markdown file (default: results/DATE-…)")
    parser.add_argument(
        "--profile", type=Path, help="folder: cProfile the relay and the first agent per phase"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.agents, args.rtt, args.scripts, args.repeats = 20, 60, 5, 5
        args.fanout = [20]
    if not 1 <= args.agents <= MAX_AGENTS:
        parser.error(f"--agents must be 1..{MAX_AGENTS}")
    if not (1 <= args.rtt <= 10_000 and 0 <= args.scripts <= 1000 and 1 <= args.repeats <= 100):
        parser.error("--rtt, --scripts or --repeats out of bounds")
    res = run(args)
    text = markdown(res)
    print(text)
    out = args.output or RESULTS / f"{res.date}-real-agents.md"
    out.write_text(text, "utf-8")
    with contextlib.suppress(OSError):
        out.with_suffix(".json").write_text(json.dumps(res.__dict__, default=str), "utf-8")
    print(f"written: {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    sys.exit(main())
