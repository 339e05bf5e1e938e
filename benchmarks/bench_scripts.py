"""Vetted-script latency: technician's run request → first output line, warm and cold metadata.

Run: ``python -m benchmarks.bench_scripts [--runs N]``. A real relay and agent (subprocesses) on
127.0.0.1 and a console session in this process; baselines in the same run: the same script run
directly with ``subprocess``, and ``verify_script`` alone. Bounded: N runs each, 60 s per run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from posassist.console.connection import ConsoleConnection
from posassist.console.scripts_repo import init_repository
from posassist.protocol import ScriptOutput, ScriptRunRequest
from tests.agent.test_verify import PASS, add, approve, manifest
from tests.e2e.cli import ADMIN_PASSWORD, ROOT, invite, ok, provision, py, start_relay, stop

SCRIPT = b"echo first line\necho second line\n"


def _login(url: str) -> str:
    import urllib.request

    body = json.dumps({"username": "admin", "password": ADMIN_PASSWORD}).encode()
    request = urllib.request.Request(
        url.replace("ws://", "http://") + "/v1/login",
        data=body,
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return str(json.loads(response.read())["token"])


async def _first_output_ms(url: str, token: str, device: str) -> float:
    async with ConsoleConnection.open(url, token) as conn:
        request = ScriptRunRequest(
            id=conn.session.next_id(),
            device_id=device,
            script="bench-echo",
            version="1.0.0",
            unattended=True,
        )
        started = time.perf_counter()
        first: float | None = None
        async for reply in conn.request(request, timeout=60):
            if isinstance(reply, ScriptOutput) and first is None:
                first = time.perf_counter()
        if first is None:
            raise SystemExit(f"bench: the script produced no output ({reply})")
        return (first - started) * 1000


def _direct_ms(folder: Path) -> float:
    started = time.perf_counter()
    with subprocess.Popen(["/bin/sh", str(folder / "run.sh")], stdout=subprocess.PIPE) as proc:
        assert proc.stdout is not None
        proc.stdout.readline()
        first = time.perf_counter()
        proc.wait(10)
    return (first - started) * 1000


def _verify_ms(url: str, till: Path, cold: bool) -> float:
    from posassist.agent.scripts.verify import verify_script

    cache = Path(tempfile.mkdtemp()) / "cache"
    base = url.replace("ws://", "http://")
    if not cold:
        verify_script(
            base + "/v1/scripts/metadata/",
            base + "/v1/scripts/targets/",
            till / "scripts" / "root.json",
            cache,
            "bench-echo",
            "1.0.0",
            1 << 20,
        )
    started = time.perf_counter()
    verify_script(
        base + "/v1/scripts/metadata/",
        base + "/v1/scripts/targets/",
        till / "scripts" / "root.json",
        cache,
        "bench-echo",
        "1.0.0",
        1 << 20,
    )
    elapsed = (time.perf_counter() - started) * 1000
    shutil.rmtree(cache.parent, ignore_errors=True)
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_scripts")
    parser.add_argument("--runs", type=int, default=10, help="runs per column (bounded)")
    args = parser.parse_args()
    runs = max(3, min(args.runs, 100))
    work = Path(tempfile.mkdtemp(prefix="posassist-bench-scripts-"))
    relay = agent = None
    try:
        relay_dir = work / "relay"
        store = provision(relay_dir)
        repo = init_repository(work / "approvers", ["alice", "bob"], PASS)
        raw: dict[str, Any] = manifest("bench-echo")
        raw.update({"risk": "A", "unattended": True, "consent": False})
        add(repo, work, raw, body=SCRIPT)
        approve(repo, "alice", "bob")
        repo.publish(relay_dir)
        relay, url = start_relay(relay_dir)
        till = work / "till"
        token = invite(relay_dir, store, url)
        ok(py("agent", "enroll", token, "--data", str(till), "--root-hash", repo.root_hash()))
        agent = subprocess.Popen(
            [sys.executable, "-m", "posassist.agent", "run", "--data", str(till)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert agent.stdout is not None
        agent.stdout.readline()  # connected
        device = json.loads((till / "agent.json").read_text())["device_id"]
        token = _login(url)
        folder = work / "direct"
        folder.mkdir()
        (folder / "run.sh").write_bytes(SCRIPT)

        cold, warm = [], []
        for _ in range(runs):
            shutil.rmtree(till / "scripts" / "cache", ignore_errors=True)  # the agent is idle
            cold.append(asyncio.run(_first_output_ms(url, token, device)))
            warm.append(asyncio.run(_first_output_ms(url, token, device)))
        direct = [_direct_ms(folder) for _ in range(runs)]
        verify_cold = [_verify_ms(url, till, cold=True) for _ in range(runs)]
        verify_warm = [_verify_ms(url, till, cold=False) for _ in range(runs)]
    finally:
        if agent is not None:
            stop(agent)  # type: ignore[arg-type]
        if relay is not None:
            stop(relay)
        shutil.rmtree(work, ignore_errors=True)

    def row(name: str, values: list[float]) -> str:
        return f"| {name} | {len(values)} | {statistics.median(values):.1f} | {max(values):.1f} |"

    added = statistics.median(warm) - statistics.median(direct)
    print(
        f"\n### Vetted script, request → first output (Python {sys.version.split()[0]}; "
        "relay, agent and console on 127.0.0.1)\n"
    )
    print("| path | runs | median ms | max ms |")
    print("|---|---|---|---|")
    print(row("direct `subprocess` (/bin/sh run.sh), the baseline", direct))
    print(row("console → relay → agent: verify (warm metadata) + run", warm))
    print(row("console → relay → agent: verify (cold metadata) + run", cold))
    print(row("`verify_script` alone, warm", verify_warm))
    print(row("`verify_script` alone, cold", verify_cold))
    met = "met" if statistics.median(verify_warm) <= 50 else "NOT met"
    print(
        f"\nwarm path minus direct run: {added:.1f} ms (routing, audit, verification, "
        f"preconditions, copy); verification alone warm: "
        f"{statistics.median(verify_warm):.1f} ms — target ≤ 50 ms: {met}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
