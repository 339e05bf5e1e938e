"""The capacity suite behind ``make bench``: a real relay process and posassist-fleet stores.

Run from the repository root: ``python -m benchmarks.suite [--quick]``. Writes
``benchmarks/results/<date>.md`` (tables) and PNG plots beside it, and prints the tables; a
``--quick`` smoke run writes to a new temporary folder unless ``--out`` is given. The plots need
the ``[bench]`` extra (matplotlib; ``make bench`` installs it), checked before anything runs.

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
import datetime
import importlib.util
import json
import os
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks.bench_relay import start_baseline
from benchmarks.bench_storm import storm
from benchmarks.harness import (
    ROOT,
    BaselinePeers,
    Fleet,
    Relay,
    Tokens,
    baseline_fanout,
    baseline_rtt,
    calibrate,
    cpu_seconds,
    device_ids,
    enrol,
    fmt,
    launch_relay,
    make_tokens,
    percentile,
    relay_fanout,
    relay_rtt,
    rss_mb,
    settle,
)
from tests.e2e.cli import provision

if TYPE_CHECKING:
    from collections.abc import Sequence

RESULTS = ROOT / "benchmarks" / "results"
#: What to say when the plotting library is missing (it is only in the [bench] extra).
NO_MATPLOTLIB = (
    "matplotlib is missing (the [bench] extra): run `make bench`, which installs it, or "
    "`make .venv/.bench-stamp`, or `pip install -e '.[bench]'`"
)


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
                            asyncio.run(relay_fanout(relay.url, tokens, devices[:n]))[0]
                        )
        # reconnect storms: once with the big fleet, then repeated with a small one (the fleets
        # of the later steps stopped, the first ones kept connected)
        for size, repeats in ((args.storm_big, 1), (args.storm_small, args.repeats)):
            while fleets and sum(f.count for f in fleets) > size:
                fleets.pop().stop()
            connected = sum(f.count for f in fleets)
            for _ in range(repeats):
                relay, result = storm(relay, fleets, connected, profile=None)
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
    quick = res.settings.get("quick")
    idle = statistics.median(res.relay_idle_mb) if res.relay_idle_mb else 0.0
    lines = [
        f"# Capacity suite, {res.date}"
        + (": a `--quick` smoke run (small counts, not figures to compare)" if quick else ""),
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
        f"| relay, idle, SQLite | {fmt(res.relay_idle_mb)} | ≤ 70"
        + (" (missed)" if idle > 70 else "")
        + " |",
        f"| bare aiohttp forwarder, idle | {fmt(res.baseline_idle_mb)} | — |",
        "",
        "## Idle authenticated agents and round trips",
        "",
        f"Enrolment of {res.steps[-1]['agents'] if res.steps else 0} tills through real one-time "
        f"tokens: {res.enrol_seconds:.1f} s. KB per agent: relay RSS minus the same relay's with "
        "no agent connected (the first row, 0). That relay is not the idle one above: it has "
        "enrolled every till and run the alert-ingest part first, and the memory Python took "
        "for that is not given back, so the 0 row sits some MB above the idle relay. Round trip: "
        "a diagnostics request from a console to "
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
            # raw figures written before the suite used bench_storm's storm call it down_seconds
            f"| {s['agents']} | {s.get('start_seconds', s.get('down_seconds', 0.0)):.1f} | "
            f"{s['seconds']:.2f} | "
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
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="folder for the tables and plots (default: benchmarks/results; with --quick a new "
        "temporary folder, so a smoke run can't pass for a real one)",
    )
    p.add_argument("--alert-seconds", type=float, default=120.0, help="alert-ingest run length")
    p.add_argument("--render", type=Path, help="only write the tables and plots of this JSON")
    p.add_argument(
        "--abuse", action="store_true", help="also the bad-behaviour scenarios (bench_abuse)"
    )
    p.add_argument(
        "--alerts-only", type=Path, help="only measure alert ingest, added to this run's JSON"
    )
    args = p.parse_args(argv)
    if args.alerts_only is None and importlib.util.find_spec("matplotlib") is None:
        p.error(NO_MATPLOTLIB)  # now, not after the measuring, when the plots are drawn
    if args.out is None:
        args.out = RESULTS
        if args.quick and args.render is None:
            args.out = Path(tempfile.mkdtemp(prefix="posassist-bench-quick-"))
    if args.render is not None:
        return render(args.render, args.out)
    if args.alerts_only is not None:
        return alerts_only(args.alerts_only, 1000, args.alert_seconds)
    if args.quick:
        print(f"--quick: a smoke run, small counts; written to {args.out}", flush=True)
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
