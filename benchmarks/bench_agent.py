"""Agent costs: idle RSS and CPU connected to a real relay, import cost per dependency, full
diagnostics report time with the simulated printer, and RSS while the relay is unreachable.

``python -m benchmarks.bench_agent [--idle-seconds N] [--idle-runs N] [--unreachable-seconds N]``;
prints markdown. The idle agent is measured on this Python and on .venv38's (the till's), each
against a baseline process measured in the same run.
Issue 5 targets: idle ≤ 40 MB RSS and < 0.5 % of a core over 5 min; report ≤ 300 ms; < 1 MB RSS
growth over 10 min unreachable. The defaults are short so ``make bench`` stays quick.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil  # type: ignore[import-untyped]

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
MB = 1024 * 1024


def _wait_for(path: Path, timeout: float = 20.0) -> str:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if path.exists() and path.read_text():
            return path.read_text()
        time.sleep(0.05)
    raise RuntimeError(f"{path} did not appear")


def _start_relay(data: Path, tls: bool = True) -> tuple[subprocess.Popen[str], str]:
    """A relay process with an organisation, merchant and store (tests/e2e/cli.py); over TLS
    with a certificate made here unless ``tls`` is False (a real relay is always TLS)."""
    from tests.e2e.cli import provision, start_relay

    store = provision(data)
    (data / "bench-store").write_text(store)
    if not tls:
        return start_relay(data)
    from tests.relay.certs import make_certificate

    cert, key = make_certificate().write(data / "tls")
    return start_relay(data, "--tls-cert", str(cert), "--tls-key", str(key))


def _make_agent(tmp: Path, relay_dir: Path, url: str, python: str = PY) -> Path:
    """A till enrolled with a one-time token, as an operator and merchant would (the token
    pins the relay's TLS key when it has one)."""
    from tests.e2e.cli import invite

    agent_dir = tmp / "till"
    cert = relay_dir / "tls" / "relay.crt"
    token = invite(
        relay_dir,
        (relay_dir / "bench-store").read_text(),
        url,
        tls_cert=cert if url.startswith("wss://") else None,
    )
    subprocess.run(
        [python, "-m", "posassist.agent", "enroll", token, "--data", str(agent_dir)],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=60,
    )
    return agent_dir


def _sample(proc: psutil.Process, seconds: float, every: float = 1.0) -> dict[str, float]:
    cpu0 = proc.cpu_times()
    t0 = time.monotonic()
    rss = [proc.memory_info().rss]
    while time.monotonic() - t0 < seconds:
        time.sleep(min(every, max(0.0, seconds - (time.monotonic() - t0))))
        rss.append(proc.memory_info().rss)
    cpu1 = proc.cpu_times()
    wall = time.monotonic() - t0
    used = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
    return {
        "rss_start": rss[0] / MB,
        "rss_end": rss[-1] / MB,
        "rss_max": max(rss) / MB,
        "cpu_pct": 100.0 * used / wall,
        "wall": wall,
    }


#: What any websocket agent on our stack loads, connected nowhere: the floor of the idle RSS.
BASELINE = (
    "import asyncio, ssl, json, logging, msgpack, websockets.asyncio.client, ctypes\n"
    "import sys; print('ready', flush=True); sys.stdin.read()\n"
)


def interpreters() -> list[tuple[str, str]]:
    """(label, python) for .venv (this one) and .venv38 (the till's Python) where built."""
    found = [(f"{sys.version_info[0]}.{sys.version_info[1]}", PY)]
    py38 = ROOT / ".venv38" / "bin" / "python"
    if py38.exists() and str(py38) != PY:
        found.append(("3.8", str(py38)))
    return found


def compiled_env(python: str) -> dict[str, str]:
    """An environment whose Python imports posassist from compiled bytecode, as an installed
    agent does (pip compiles on install): our shells set PYTHONDONTWRITEBYTECODE, and compiling
    the sources at every start costs more than a MB that a till never pays. The bytecode goes to
    the sources' ``__pycache__`` (git-ignored); the stdlib and site-packages have theirs."""
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    subprocess.run(
        [python, "-m", "compileall", "-q", "agent", "client", "protocol"],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        timeout=120,
    )
    return env


def bench_baseline(python: str, env: dict[str, str]) -> float:
    """RSS (MB) of a bare process that imported the agent's unavoidable stack."""
    proc = subprocess.Popen(
        [python, "-W", "ignore", "-c", BASELINE],
        cwd=ROOT,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != b"ready":
            raise RuntimeError("baseline process did not start")
        return float(psutil.Process(proc.pid).memory_info().rss / MB)
    finally:
        proc.kill()
        proc.communicate(timeout=15)


def _till_setup(agent_dir: Path, printer_port: int) -> None:
    """The demo POS profile (its log, data folder) and a printer on the simulated TCP printer:
    every check has something real to read (docs/agent.md#settingsjson)."""
    (agent_dir / "pos" / "logs").mkdir(parents=True, exist_ok=True)
    (agent_dir / "pos" / "logs" / "pos.log").write_text(
        "".join(f"2026-12-05 12:00:{i % 60:02d} INFO sale {i}\n" for i in range(2000)),
        encoding="utf-8",
    )
    settings = {
        "pos_profile": "demo",
        "printers": [{"name": "receipt", "tcp": f"127.0.0.1:{printer_port}"}],
    }
    (agent_dir / "settings.json").write_text(json.dumps(settings), encoding="utf-8")


def bench_idle(
    seconds: float, python: str = PY, env: dict[str, str] | None = None, checks: bool = False
) -> dict[str, float]:
    """The agent idle, connected; ``checks``: every health check on at its default interval, with
    a POS profile and a printer to check, else ``--no-checks`` on the same kind of till."""
    from tests.fakes.simprinter import SimPrinter

    with tempfile.TemporaryDirectory() as d, SimPrinter() as printer:
        tmp = Path(d)
        _, printer_port = printer.start_tcp()
        relay, url = _start_relay(tmp / "relay")
        try:
            agent_dir = _make_agent(tmp, tmp / "relay", url, python)
            _till_setup(agent_dir, printer_port)
            agent = subprocess.Popen(
                [python, "-m", "posassist.agent", "run", "--data", str(agent_dir)]
                + ([] if checks else ["--no-checks"]),
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
            )
            try:
                assert agent.stdout is not None
                line = agent.stdout.readline().decode("utf-8", "replace")
                if "connected" not in line:
                    raise RuntimeError("agent did not connect: " + line)
                time.sleep(2.0)  # settle after the handshake
                return _sample(psutil.Process(agent.pid), seconds)
            finally:
                agent.terminate()
                agent.wait(15)
        finally:
            relay.terminate()
            relay.wait(15)


def bench_unreachable(seconds: float, max_backoff: float) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as d:
        # Enrolled with a relay that then stops: its port refuses connections at once.
        relay, url = _start_relay(Path(d) / "relay")
        try:
            agent_dir = _make_agent(Path(d), Path(d) / "relay", url)
        finally:
            relay.terminate()
            relay.wait(15)
        agent = subprocess.Popen(
            [
                PY,
                "-m",
                "posassist.agent",
                "run",
                "--data",
                str(agent_dir),
                "--max-backoff",
                str(max_backoff),
            ],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            time.sleep(min(10.0, seconds / 4))  # warm-up: first attempts allocate caches
            return _sample(psutil.Process(agent.pid), seconds, every=5.0)
        finally:
            agent.terminate()
            agent.wait(15)


IMPORTS = {
    "bare interpreter": "pass",
    "msgpack": "import msgpack",
    "cryptography (Ed25519)": "from cryptography.hazmat.primitives.asymmetric import ed25519",
    "websockets client": "import websockets.asyncio.client",
    "psutil": "import psutil",
    "serial (pyserial)": "import serial, serial.tools.list_ports",
    "asyncio + ssl": "import asyncio, ssl",
    "agent idle set (agent.run)": "import posassist.agent.run",
    "sqlite3 (the outbox)": "import sqlite3",
    "agent + health checks": (
        "import posassist.agent.run, posassist.agent.checks.monitor, posassist.agent.outbox, "
        "posassist.agent.checks.rules, posassist.agent.checks.samplers, psutil"
    ),
    "agent + diagnostics": (
        "import posassist.agent.run, posassist.agent.diagnostics as d; d.default_collectors()"
    ),
}


def _rss_after(code: str) -> float:
    prog = code + "\nimport resource, sys\nprint(open('/proc/self/statm').read().split()[1])"
    out = subprocess.run([PY, "-c", prog], cwd=ROOT, check=True, capture_output=True, text=True)
    return int(out.stdout.split()[-1]) * os.sysconf("SC_PAGE_SIZE") / MB


def bench_imports(repeat: int = 3) -> list[tuple[str, float, float]]:
    results = {
        name: statistics.median(_rss_after(code) for _ in range(repeat))
        for name, code in IMPORTS.items()
    }
    bare = results["bare interpreter"]
    return [(name, rss, rss - bare) for name, rss in results.items()]


def bench_report(runs: int = 7) -> dict[str, float]:
    from posassist.agent.diagnostics import (
        DiagContext,
        ProbeLimiter,
        collect_report,
        default_collectors,
    )
    from posassist.agent.profile import load_profile
    from posassist.agent.settings import PrinterConfig, Settings
    from tests.fakes.simprinter import SimPrinter

    with tempfile.TemporaryDirectory() as d, SimPrinter() as printer:
        data = Path(d)
        (data / "pos" / "logs").mkdir(parents=True)
        (data / "pos" / "logs" / "pos.log").write_text(
            "".join(
                f"2026-11-25 12:00:{i % 60:02d} INFO sale {i} card 4111111111111111\n"
                if i % 7
                else f"ERROR printer timeout {i}\n"
                for i in range(3000)
            ),
            encoding="utf-8",
        )
        host, port = printer.start_tcp()
        pty = printer.start_pty()
        settings = Settings(
            relay_url="",
            printers=(
                PrinterConfig(name="tcp", host=host, port=port),
                PrinterConfig(name="pty", serial=pty),
            ),
        )
        times = []
        for _ in range(runs):
            ctx = DiagContext(settings, data, load_profile("demo", data), limiter=ProbeLimiter(0.0))
            t0 = time.perf_counter()
            sections = asyncio.run(collect_report(ctx, default_collectors(), time.monotonic() + 10))
            times.append((time.perf_counter() - t0) * 1000)
        slowest = max(sections.items(), key=lambda kv: kv[1]["elapsed_ms"])
        outcomes = [p["outcome"] for p in sections["printers"]["data"]["printers"]]
        return {
            "median_ms": statistics.median(times),
            "max_ms": max(times),
            "runs": runs,
            "slowest": f"{slowest[0]} {slowest[1]['elapsed_ms']} ms",
            "printers": ", ".join(outcomes),
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench_agent")
    parser.add_argument("--idle-seconds", type=float, default=20.0)
    parser.add_argument(
        "--checks-seconds",
        type=float,
        default=65.0,
        help="the checks-on sample: long enough for every 60 s check to run again",
    )
    parser.add_argument("--idle-runs", type=int, default=3, help="idle runs per Python (median)")
    parser.add_argument("--unreachable-seconds", type=float, default=20.0)
    parser.add_argument(
        "--max-backoff",
        type=float,
        default=1.0,
        help="the agent's reconnect cap while unreachable (many cycles)",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    print(f"# bench_agent ({sys.version.split()[0]}, {os.cpu_count()} CPUs)\n")
    imports = bench_imports()
    print("## Import cost (RSS after import, fresh interpreter each, median of 3)\n")
    print("| import | RSS MB | Δ vs bare MB |\n|---|---|---|")
    for name, rss, delta in imports:
        print(f"| {name} | {rss:.1f} | {delta:+.1f} |")

    report = bench_report()
    print("\n## Full diagnostics report, simulated printer on TCP and a pty (target ≤ 300 ms)\n")
    print(
        "| runs | median ms | max ms | slowest section | printer outcomes |\n|---|---|---|---|---|"
    )
    print(
        f"| {report['runs']} | {report['median_ms']:.0f} | {report['max_ms']:.0f} | "
        f"{report['slowest']} | {report['printers']} |"
    )

    print(
        f"\n## Agent idle, connected over pinned TLS to a relay subprocess (demo POS profile, a "
        "simulated "
        f"printer), checks off {args.idle_seconds:.0f} s (median of {args.idle_runs} runs) and "
        f"every health check on at its default interval {args.checks_seconds:.0f} s (one run); "
        "targets ≤ 40 MB, < 0.5 % of a core idle, < 1 % with checks\n"
    )
    print(
        "Bytecode compiled as on an installed till. Baseline: a bare process that imported "
        "asyncio, ssl, msgpack, websockets' client and ctypes (the agent signs with ssl's "
        "OpenSSL), "
        "connected nowhere (same sitting)."
        "\n"
    )
    print(
        "| Python | agent | RSS start MB | RSS end MB | RSS max MB | CPU % of one core | "
        "baseline MB | end ÷ baseline | end − baseline MB |\n|---|---|---|---|---|---|---|---|---|"
    )
    idle_by: dict[str, dict[str, float]] = {}
    for label, python in interpreters():
        env = compiled_env(python)
        runs = [bench_idle(args.idle_seconds, python, env) for _ in range(args.idle_runs)]
        idle = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        base = statistics.median(bench_baseline(python, env) for _ in range(args.idle_runs))
        checked = bench_idle(args.checks_seconds, python, env, checks=True)
        idle["baseline"] = checked["baseline"] = base
        idle_by[label] = idle
        idle_by[label + " checks"] = checked
        for name, row in (("--no-checks", idle), ("all checks on", checked)):
            print(
                f"| {label} | {name} | {row['rss_start']:.1f} | {row['rss_end']:.1f} | "
                f"{row['rss_max']:.1f} | {row['cpu_pct']:.3f} | {base:.1f} | "
                f"{row['rss_end'] / base:.2f} | {row['rss_end'] - base:+.1f} |"
            )

    down = bench_unreachable(args.unreachable_seconds, args.max_backoff)
    print(
        f"\n## Relay unreachable (connection refused), {down['wall']:.0f} s after warm-up, "
        f"reconnect cap {args.max_backoff} s (target < 1 MB growth)\n"
    )
    print("| RSS start MB | RSS end MB | growth MB | RSS max MB | CPU % |\n|---|---|---|---|---|")
    print(
        f"| {down['rss_start']:.2f} | {down['rss_end']:.2f} | "
        f"{down['rss_end'] - down['rss_start']:+.2f} | {down['rss_max']:.2f} | "
        f"{down['cpu_pct']:.3f} |"
    )
    if args.json:
        print(json.dumps({"imports": imports, "report": report, "idle": idle_by, "down": down}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
