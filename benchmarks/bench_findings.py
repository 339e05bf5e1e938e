"""Findings costs: the full offline diagnostics on the simulated printer (TCP and a pty), with the
findings layer and rendering, next to the same run without them; warm (in-process) and cold
(``posassist-agent diag --offline`` as a fresh interpreter), with the cold run's peak RSS.

``python -m benchmarks.bench_findings [--runs N] [--cold-runs N]``; prints markdown.
Issue 14 targets: ≤ 300 ms warm, ≤ 2 s cold including the interpreter, peak RSS ≤ 45 MB.
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
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable

#: Collects the same report as ``diag --offline`` but stops before findings and rendering.
WITHOUT_FINDINGS = """
import asyncio, json, sys, time
from pathlib import Path
from posassist.agent.diagnostics import DiagContext, collect_report, default_collectors
ctx = DiagContext.load(Path(sys.argv[1]))
sections = asyncio.run(collect_report(ctx, default_collectors(), time.monotonic() + 15))
print(json.dumps({"collected_at": time.time(), "sections": sections}, ensure_ascii=False))
"""
#: The same program, plus the findings layer and the text renderer.
WITH_FINDINGS = WITHOUT_FINDINGS.replace(
    "print(json.dumps(",
    "from posassist.agent.findings import annotate\n"
    "from posassist.client.render import render_report\n"
    "report = {'collected_at': time.time(), 'sections': sections}\n"
    "annotate(report, ctx.profile, report['collected_at'])\n"
    "render_report(report, now=report['collected_at'])\n"
    "print(json.dumps(",
)
#: Runs a command and prints its peak RSS (KiB, Linux ru_maxrss) and wall time.
MEASURE = """
import resource, subprocess, sys, time
t0 = time.perf_counter()
subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)
wall = time.perf_counter() - t0
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, wall)
"""


def _till(data: Path, tcp: tuple[str, int], pty: str) -> None:
    """A till's data folder: the demo POS profile, a busy log, a TCP and a serial printer."""
    (data / "pos" / "logs").mkdir(parents=True)
    (data / "pos" / "logs" / "pos.log").write_text(
        "".join(
            f"2026-11-25 12:00:{i % 60:02d} INFO sale {i} card 6222021234567890\n"
            if i % 7
            else f"ERROR printer timeout {i}; SQLITE_BUSY\n"
            for i in range(3000)
        ),
        encoding="utf-8",
    )
    settings = {
        "pos_profile": "demo",
        "printer_min_interval": 0,
        "printers": [
            {"name": "tcp", "tcp": f"{tcp[0]}:{tcp[1]}"},
            {"name": "pty", "serial": pty},
        ],
    }
    (data / "settings.json").write_text(json.dumps(settings), encoding="utf-8")


def bench_warm(data: Path, runs: int) -> dict[str, Any]:
    from posassist.agent.diagnostics import DiagContext, collect_report, default_collectors
    from posassist.agent.findings import annotate
    from posassist.client.render import render_report

    plain: list[float] = []
    full: list[float] = []
    layer: list[float] = []
    count = 0
    for i in range(runs * 2):
        ctx = DiagContext.load(data)
        t0 = time.perf_counter()
        sections = asyncio.run(collect_report(ctx, default_collectors(), time.monotonic() + 15))
        report: dict[str, Any] = {"collected_at": time.time(), "sections": sections}
        t1 = time.perf_counter()
        if i % 2:  # alternate, so both see the same warm caches
            annotate(report, ctx.profile, report["collected_at"])
            render_report(report, now=report["collected_at"])
            json.dumps(report, ensure_ascii=False)
            t2 = time.perf_counter()
            full.append((t2 - t0) * 1000)
            layer.append((t2 - t1) * 1000)
            count = sum(len(s["findings"]) for s in sections.values())
        else:
            json.dumps(report, ensure_ascii=False)
            plain.append((time.perf_counter() - t0) * 1000)
    return {"plain": plain, "full": full, "layer": layer, "findings": count}


def _measure(argv: list[str]) -> tuple[float, float]:
    out = subprocess.run(
        [PY, "-c", MEASURE, *argv], cwd=ROOT, check=True, capture_output=True, text=True
    )
    rss_kib, wall = out.stdout.split()
    return int(rss_kib) / 1024, float(wall) * 1000


def bench_cold(data: Path, runs: int) -> dict[str, list[tuple[float, float]]]:
    cli = [PY, "-m", "posassist.agent", "diag", "--offline", "--data", str(data)]
    return {
        "without findings (collectors only)": [
            _measure([PY, "-c", WITHOUT_FINDINGS, str(data)]) for _ in range(runs)
        ],
        "with findings (same, + annotate + render)": [
            _measure([PY, "-c", WITH_FINDINGS, str(data)]) for _ in range(runs)
        ],
        "posassist-agent diag --offline": [_measure(cli) for _ in range(runs)],
        "posassist-agent diag --offline --json": [_measure([*cli, "--json"]) for _ in range(runs)],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench_findings")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--cold-runs", type=int, default=3)
    args = parser.parse_args(argv)
    from tests.fakes.simprinter import SimPrinter

    print(f"# bench_findings ({sys.version.split()[0]}, {os.cpu_count()} CPUs)\n")
    with tempfile.TemporaryDirectory() as d, SimPrinter() as printer:
        data = Path(d)
        tcp = printer.start_tcp()
        _till(data, tcp, printer.start_pty())
        warm = bench_warm(data, args.runs)
        cold = bench_cold(data, args.cold_runs)
    print("## Warm: full offline report in-process (target ≤ 300 ms)\n")
    print("| run | runs | median ms | max ms |\n|---|---|---|---|")
    for name, key in (
        ("without findings", "plain"),
        ("with findings + text + JSON", "full"),
        ("findings + text + JSON alone", "layer"),
    ):
        xs = warm[key]
        print(f"| {name} | {len(xs)} | {statistics.median(xs):.1f} | {max(xs):.1f} |")
    print(f"\n{warm['findings']} findings per report.\n")
    print("## Cold: a fresh interpreter per run (target ≤ 2 s, peak RSS ≤ 45 MB)\n")
    print("| run | runs | median ms | max ms | peak RSS MB |\n|---|---|---|---|---|")
    for name, rows in cold.items():
        walls = [w for _, w in rows]
        rss = max(r for r, _ in rows)
        print(
            f"| {name} | {len(rows)} | {statistics.median(walls):.0f} | {max(walls):.0f} | "
            f"{rss:.1f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
