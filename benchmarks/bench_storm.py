"""Reconnect storm: a real relay process restarted with N fleet agents connected; how long until
every agent is authenticated again, and what the relay spent on it.

Run from the repository root: ``python -m benchmarks.bench_storm [--agents N] [--runs R]``.
``posassist-relay serve`` on SQLite, N tills enrolled through real one-time tokens and run by
``posassist-fleet`` (one loopback address per store, 5,000 tills per process), then R times: the
relay gets SIGTERM (it closes every agent with 1001, docs/protocol.md#close-codes) and a new
process starts on the same port and data. Measured per run: the old relay's stop, the new one's
start, seconds from "listening" until the last agent is authenticated (and until 50/90/99%), the
new relay's CPU seconds in that window (handshakes per core-second), its peak RSS, and the
agents' errors by kind (every one retried: a storm must lose no agent).

``--profile FILE`` runs the restarted relay of the last run under cProfile (written when it
stops). ``--keep DIR`` keeps the relay and the enrolled tills in DIR and uses them again on the
next run with the same DIR (enrolling 10,000 tills takes about a minute). ``--plain-backoff``
gives the fleet the agent's schedule before the going-away change (docs/notes/16b-status.md):
the "before" of a before/after.

Bounded: at most 19,000 agents (the fd limit), 10 runs, and every wait has a deadline. Not a
test: no assertion on timing. Prints a markdown table; ``--json FILE`` writes the raw figures.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil  # type: ignore[import-untyped]

from benchmarks.harness import (
    Fleet,
    PeakRss,
    Relay,
    calibrate,
    cpu_seconds,
    enrol,
    fleet_errors,
    launch_relay,
    till_folders,
)
from tests.e2e.cli import provision

if TYPE_CHECKING:
    from collections.abc import Sequence

MAX_AGENTS = 19_000
MAX_RUNS = 10
#: The longest one storm may take before the run is called failed.
STORM_DEADLINE = 600.0


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of ``pid`` and its children (a fleet spread over processes)."""
    try:
        proc = psutil.Process(pid)
        total = cpu_seconds(pid)
        for child in proc.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                total += cpu_seconds(child.pid)
    except psutil.Error:
        return 0.0
    return total


def when_reached(curve: Sequence[tuple[float, int]], count: int) -> float | None:
    """Seconds at which the curve first reaches ``count`` agents."""
    for at, connected in curve:
        if connected >= count:
            return at
    return None


def storm(
    relay: Relay,
    fleets: Sequence[Fleet],
    agents: int,
    profile: Path | None,
    options: Sequence[str] = (),
) -> tuple[Relay, dict[str, Any]]:
    """Restart the relay under ``fleets``: the figures of one storm."""
    marks = [f.mark() for f in fleets]
    before = fleet_errors(fleets)
    load = os.getloadavg()[0]  # the machine is shared: how busy it was when the storm began
    started_stop = time.time()
    relay.stop()
    stopped = time.time()
    # under cProfile the profile is written when the relay exits
    runner = () if profile is None else (sys.executable, "-m", "cProfile", "-o", str(profile), "-m")
    new = launch_relay(relay.data, relay.store, relay.port, options, runner)
    listening = time.time()
    peak = PeakRss(new.pid)
    cpu_start = cpu_seconds(new.pid)
    fleet_start = sum(tree_cpu_seconds(f.proc.pid) for f in fleets)
    ends = [f.wait_all_connected(m, STORM_DEADLINE) for f, m in zip(fleets, marks, strict=True)]
    all_in = max(float(e["all_in_at"]) for e in ends)
    cpu = cpu_seconds(new.pid) - cpu_start
    fleet_cpu = sum(tree_cpu_seconds(f.proc.pid) for f in fleets) - fleet_start
    time.sleep(1.0)  # one more status line from each process, for the errors
    after = fleet_errors(fleets)
    state: dict[tuple[int, Any], int] = {}
    points: list[tuple[float, int]] = []
    events = sorted(
        (float(e["at"]), (i, e["process"]), int(e["connected"]))
        for i, (f, m) in enumerate(zip(fleets, marks, strict=True))
        for e in f.status_since(m)
    )
    for at, key, connected in events:
        state[key] = connected
        if at >= listening:
            points.append((at - listening, sum(state.values())))
    points.append((all_in - listening, agents))
    return new, {
        "agents": agents,
        "stop_seconds": round(stopped - started_stop, 3),
        "start_seconds": round(listening - stopped, 3),
        "seconds": round(all_in - listening, 3),
        "p50": when_reached(points, agents // 2),
        "p90": when_reached(points, agents * 9 // 10),
        "p99": when_reached(points, agents * 99 // 100),
        "relay_cpu": round(cpu, 3),
        "fleet_cpu": round(fleet_cpu, 3),
        "handshakes_per_core_second": round(agents / cpu, 1) if cpu > 0 else 0.0,
        "peak_rss_mb": round(peak.stop(), 1),
        "load_average": round(load, 1),
        "errors": {k: n - before.get(k, 0) for k, n in after.items() if n > before.get(k, 0)},
        "curve": points,
    }


def prepared(keep: Path | None, agents: int) -> tuple[Relay, Path]:
    """A relay with at least ``agents`` enrolled tills (made, or found in ``keep``)."""
    work = keep or Path(tempfile.mkdtemp(prefix="posassist-storm-"))
    data, ids = work / "relay", work / "ids"
    store_file = work / "store"
    if not store_file.exists():
        store_file.write_text(provision(data))
    have = len(till_folders(ids)) if ids.exists() else 0
    port = 0  # kept tills name their relay's URL: it comes back on the same port
    if have:
        first = json.loads((till_folders(ids)[0] / "agent.json").read_text())
        port = int(str(first["relay_url"]).rsplit(":", 1)[1])
    relay = launch_relay(data, store_file.read_text(), port)
    if have < agents:
        seconds = enrol(relay, ids, agents - have)
        print(f"enrolled {agents - have} tills in {seconds:.1f} s", flush=True)
    return relay, ids


def table(runs: Sequence[dict[str, Any]]) -> str:
    def sec(x: float | None) -> str:
        return "—" if x is None else f"{x:.2f}"

    lines = [
        "| agents | old relay stop s | new relay start s | 50% s | 90% s | 99% s | all s "
        "| relay CPU s | fleet CPU s | handshakes per relay core-s | peak RSS MB "
        "| agents' errors (all retried) | load average |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        errors = ", ".join(f"{k} {v}" for k, v in sorted(r["errors"].items())) or "none"
        lines.append(
            f"| {r['agents']} | {r['stop_seconds']:.1f} | {r['start_seconds']:.1f} | "
            f"{sec(r['p50'])} | {sec(r['p90'])} | {sec(r['p99'])} | **{r['seconds']:.2f}** | "
            f"{r['relay_cpu']:.2f} | {r.get('fleet_cpu', 0.0):.2f} | "
            f"{r['handshakes_per_core_second']:.0f} | "
            f"{r['peak_rss_mb']:.0f} | {errors} | {r.get('load_average', '—')} |"
        )
    if len(runs) > 1:
        all_s = [r["seconds"] for r in runs]
        lines.append(
            f"\nmedian {statistics.median(all_s):.2f} s (min {min(all_s):.2f}, "
            f"max {max(all_s):.2f}) over {len(runs)} runs"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--agents", type=int, default=2000)
    p.add_argument("--runs", type=int, default=1)
    p.add_argument("--keep", type=Path, help="keep the relay and tills here, reuse them next time")
    p.add_argument("--profile", type=Path, help="cProfile the last run's restarted relay")
    p.add_argument(
        "--plain-backoff", action="store_true", help="the agents' schedule before going-away"
    )
    p.add_argument(
        "--connect-concurrency",
        type=int,
        default=128,
        help="connections each fleet process opens at once (128, the fleet's default; real "
        "tills all come at once)",
    )
    p.add_argument(
        "--relay-option",
        action="append",
        default=[],
        help="an option for the restarted relay's serve, e.g. --relay-option=--max-handshakes-"
        "in-flight=0 (repeatable)",
    )
    p.add_argument("--json", type=Path, help="write the raw figures here")
    args = p.parse_args(argv)
    if not 1 <= args.agents <= MAX_AGENTS:
        p.error(f"--agents must be 1..{MAX_AGENTS} (the fd limit)")
    if not 1 <= args.runs <= MAX_RUNS:
        p.error(f"--runs must be 1..{MAX_RUNS}")
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
    calibration = [calibrate()]
    relay, ids = prepared(args.keep, args.agents)
    runs: list[dict[str, Any]] = []
    fleets: list[Fleet] = []
    try:
        extra = ["--plain-backoff"] if args.plain_backoff else []
        extra += ["--connect-concurrency", str(args.connect_concurrency)]
        fleets.append(Fleet(relay, ids, 0, args.agents, 3600.0, extra=extra))
        fleets[0].wait_all_connected(0, STORM_DEADLINE)
        for i in range(args.runs):
            profile = args.profile if i == args.runs - 1 else None
            relay, result = storm(relay, fleets, args.agents, profile, args.relay_option)
            runs.append(result)
            print(f"storm {args.agents}: {result['seconds']} s", flush=True)
    finally:
        for f in fleets:
            f.stop()
        relay.stop()
    calibration.append(calibrate())
    print(
        f"\ncalibration (CPU loop) {calibration[0]:.3f} s at start, {calibration[1]:.3f} s at end"
    )
    print(table(runs))
    if args.json is not None:
        args.json.write_text(json.dumps({"calibration": calibration, "runs": runs}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
